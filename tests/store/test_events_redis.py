"""Events over the Redis online store: with the store down the answer is 503 and nothing is lost or counted twice.

The test starts its own redis-server (append-only file, fsync on every write, so a restart keeps its data) and
stops it at chosen moments: before a request, and in the middle of one (after the offline part is written, before
the aggregates are committed).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from encore.events import Event, EventLog, EventRules, EventStoreUnavailable
from encore.store import Store, StoreSettings
from tests.conftest import _redis_answers, free_port


class RedisServer:
    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no redis-server binary")
        args = [binary, "--port", str(self.port), "--dir", str(self.folder), "--appendonly", "yes"]
        args += ["--appendfsync", "always", "--save", ""]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _redis_answers(self.port):
            assert time.monotonic() < deadline and self.process.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_store(redis_server: RedisServer, tmp_path: Path) -> Store:
    settings = StoreSettings(
        data_dir=tmp_path / "feast",
        project=f"ev_{uuid.uuid4().hex[:8]}",
        online="redis",
        redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
    )
    store = Store(settings)
    store.apply()
    for i in range(3):
        vector = np.eye(4, dtype=np.float32)[i]
        content = {"embedding": vector, "tokens": [0], "encoder": "mfcc", "encoder_revision": "r", "typicality": 1.0}
        store.push_track(f"t{i}", None, content | {"tags": ""})
    return store


def _batch(user: str, n: int) -> list[Event]:
    now = datetime.now(UTC) - timedelta(seconds=5)
    return [Event(f"e-{uuid.uuid4().hex}", user, f"t{i % 3}", "play", 60_000, now) for i in range(n)]


def _known(ids: list[str]) -> set[str]:
    return set(ids) & {"t0", "t1", "t2"}


def test_store_down_answers_unavailable_and_a_retry_loses_nothing(redis_server, redis_store: Store) -> None:
    log = EventLog(redis_store, EventRules())
    batch = _batch("u1", 5)
    redis_server.stop()
    with pytest.raises(EventStoreUnavailable):
        log.ingest(batch, _known)
    redis_server.start()

    result = log.ingest(batch, _known)

    assert (result.accepted, result.duplicates) == (5, 0)
    assert redis_store.get_activity(["u1"])["u1"]["n_play"] == 5
    assert sorted(log.read()["event_id"]) == sorted(e.event_id for e in batch)
    log.close()


def test_store_lost_in_the_middle_of_a_batch_counts_every_event_once(redis_server, redis_store: Store) -> None:
    """Redis stops after the offline part is published and before the commit: 503, then the retry lands once."""
    first = _batch("u2", 3)
    EventLog(redis_store, EventRules()).ingest(first, _known)
    stops = {"n": 0}

    def embeddings_then_outage(ids: list[str]) -> dict:  # called between the offline write and the commit
        if stops["n"] == 0:
            stops["n"] += 1
            redis_server.stop()
        return {}

    log = EventLog(redis_store, EventRules(), embeddings_then_outage)
    batch = _batch("u2", 4)
    with pytest.raises(EventStoreUnavailable):
        log.ingest(batch, _known)
    redis_server.start()
    assert redis_store.get_activity(["u2"])["u2"]["n_play"] == 3  # nothing of the failed batch counted

    result = log.ingest([*batch, first[0]], _known)  # the client retries (plus an old repeat)

    assert (result.accepted, result.duplicates) == (4, 1)
    assert redis_store.get_activity(["u2"])["u2"]["n_play"] == 7
    logged = log.read()
    assert sorted(logged["event_id"]) == sorted(e.event_id for e in [*first, *batch])  # each once
    log.close()


def test_repeats_are_recognised_across_workers_and_restarts(redis_server, redis_store: Store) -> None:
    batch = _batch("u3", 4)
    assert EventLog(redis_store, EventRules()).ingest(batch, _known).accepted == 4
    redis_server.stop()
    redis_server.start()  # the seen ids live in the store, not in a process
    again = EventLog(redis_store, EventRules()).ingest(batch, _known)
    assert (again.accepted, again.duplicates) == (0, 4)
    assert redis_store.get_activity(["u3"])["u3"]["n_play"] == 4


def test_delete_on_redis_removes_features(redis_store: Store) -> None:
    log = EventLog(redis_store, EventRules())
    log.ingest([*_batch("u4", 2), *_batch("u5", 1)], _known)
    result = log.delete_user("u4")
    assert result.events == 2 and result.had_features
    assert redis_store.get_activity(["u4", "u5"]).keys() == {"u5"}
    assert set(log.read()["user_id"]) == {"u5"}
    log.close()


def test_a_writer_whose_lock_expired_cannot_overwrite_newer_aggregates(redis_store: Store) -> None:
    """Between a batch's read of the aggregates and its commit, another writer commits for the same listener (as
    when the `events` lock expired under a stalled writer): the stale commit fails whole (503), and the retry
    counts both batches, each once."""
    other = EventLog(redis_store, EventRules())
    late = _batch("u6", 2)

    def another_writer_commits_meanwhile(ids: list[str]) -> dict:  # runs between the read and the commit
        if not late_done:
            late_done.append(True)
            seen, activities = other.state.begin([e.event_id for e in late], ["u6"])
            for event in late:
                activities["u6"].fold(event, None, 50)
            other.state.commit([e.event_id for e in late], activities, 3600)
        return {}

    late_done: list[bool] = []
    log = EventLog(redis_store, EventRules(), another_writer_commits_meanwhile)
    batch = _batch("u6", 3)
    with pytest.raises(EventStoreUnavailable):
        log.ingest(batch, _known)
    assert redis_store.get_activity(["u6"])["u6"]["n_play"] == 2  # the stale commit wrote nothing

    assert log.ingest(batch, _known).accepted == 3
    assert redis_store.get_activity(["u6"])["u6"]["n_play"] == 5
    log.close()
    other.close()
