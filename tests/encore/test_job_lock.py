"""The retrain's store lock (encore/job_lock.py): one holder across every process (or node) sharing the store, on a
real Redis and on SQLite; renewed while held, freed when its holder dies, and a lost lock is reported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from encore.job_lock import JobLocked, LockLost, job_lock
from encore.store import Store, StoreSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from encore.job_lock import job_lock
from encore.store import Store, StoreSettings
settings = StoreSettings(data_dir=Path(sys.argv[1]), project=sys.argv[2], online=sys.argv[3], redis_url=sys.argv[4])
with job_lock(Store(settings), "retrain", ttl_s=1.0):
    print("held", flush=True)
    time.sleep(600)
"""


def node(tmp_path: Path, project: str, online: str, redis_url: str) -> Store:
    """Another node's view of the same store: its own Store object and data folder (Redis) or the same (SQLite)."""
    data_dir = tmp_path / (f"node-{uuid.uuid4().hex[:6]}" if online == "redis" else "shared")
    return Store(StoreSettings(data_dir=data_dir, project=project, online=online, redis_url=redis_url))


@pytest.mark.parametrize("online", ["redis", "sqlite"])
def test_one_holder_among_every_node_and_free_again_after(tmp_path: Path, redis_url: str, online: str) -> None:
    project = f"lock_{uuid.uuid4().hex[:8]}"
    first, second = node(tmp_path, project, online, redis_url), node(tmp_path, project, online, redis_url)
    with job_lock(first, "retrain"):
        with pytest.raises(JobLocked, match="another job holds the lock 'retrain'"):
            with job_lock(second, "retrain"):
                pass
        with job_lock(second, "another job"):  # locks are per name
            pass
    with job_lock(second, "retrain") as held:
        held.check()


@pytest.mark.parametrize("online", ["redis", "sqlite"])
def test_a_killed_holder_frees_the_lock(tmp_path: Path, redis_url: str, online: str) -> None:
    project = f"lock_{uuid.uuid4().hex[:8]}"
    store = node(tmp_path, project, online, redis_url)
    args = [str(node(tmp_path, project, online, redis_url).settings.data_dir), project, online, redis_url]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(1.5)  # past the 1 s ttl: still held, since the holder renews it
        with pytest.raises(JobLocked):
            with job_lock(store, "retrain"):
                pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 30  # Redis: the ttl runs out (1 s); SQLite: the OS drops the flock at once
    while True:
        try:
            with job_lock(store, "retrain"):
                break
        except JobLocked:
            assert time.monotonic() < deadline, "the dead holder's lock never expired"
            time.sleep(0.2)


def test_a_lock_lost_while_held_is_reported_before_the_next_step(tmp_path: Path, redis_url: str) -> None:
    project = f"lock_{uuid.uuid4().hex[:8]}"
    store = node(tmp_path, project, "redis", redis_url)
    client = redis.Redis.from_url(redis_url)
    with job_lock(store, "retrain", ttl_s=0.6) as held:
        keys = client.keys(f"{project}:job:*")
        assert len(keys) == 1
        client.set(keys[0], b"another holder's token")  # say it expired during an outage and was taken
        deadline = time.monotonic() + 30
        while not held.lost.is_set():
            assert time.monotonic() < deadline, "the renewer never noticed"
            time.sleep(0.05)
        with pytest.raises(LockLost, match="lost while the job ran"):
            held.check()
    assert client.get(keys[0]) == b"another holder's token"  # the other holder's lock is left alone
    client.delete(keys[0])
