"""Faults under load, against the ranker as deployed (a uvicorn process) and a Redis online store of its own:
Redis stopped and restarted, the retriever failing, bundles swapped (and a corrupt one refused) mid-load.

The load is a few client threads sending /recommend without pause; every answer is recorded. No timing is
asserted except the issue's recovery deadline (Redis back -> undegraded answers within 5 s), which is polled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from encore.store import Store, StoreSettings
from tests.conftest import free_port, service_process
from tests.services.ranker.conftest import FakeRetriever, TrainedBundle, candidate_rows, copy_bundle

pytestmark = pytest.mark.slow
API_KEY = "fault-key"
WARM_USERS = [f"u{i}" for i in range(10)]  # requested before the outage: their (expired) profiles stay cached
COLD_USERS = [f"u{i}" for i in range(20, 40)]  # never answered while Redis is down: each needs a store read
RECOVERY_DEADLINE_S = 5.0


class RedisServer:
    """A redis-server of this test's own (it gets stopped), persisting to an RDB file so a restart keeps data."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.binary = shutil.which("redis-server")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.binary is not None
        command = [self.binary, "--port", str(self.port), "--dir", str(self.folder), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.answers():
            assert time.monotonic() < deadline and self.process.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2).ping())
        except redis.RedisError:
            return False

    def save(self) -> None:
        import redis

        redis.Redis(port=self.port).save()  # dump.rdb in `folder`: read back by the next start

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # a crash, not a clean shutdown
            self.process.wait(timeout=10)


@dataclass
class Load:
    """Client threads calling GET /recommend in a loop; records (status, degraded, bundle_id) per answer."""

    url: str
    users: list[str]
    threads: int = 3
    answers: list[tuple[int | str, bool, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = n
            while not self._stop.is_set():
                user = self.users[i % len(self.users)]
                i += self.threads
                try:
                    response = client.get("/recommend", params={"user_id": user, "k": 5})
                except httpx.HTTPError as error:
                    self.answers.append((type(error).__name__, False, None))
                    continue
                body = response.json() if response.status_code == 200 else {}
                self.answers.append((response.status_code, bool(body.get("degraded")), body.get("bundle_id")))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def wait_for(self, n: int, timeout_s: float = 60) -> None:
        """Until `n` more answers arrived (so every phase really ran under load)."""
        target, deadline = len(self.answers) + n, time.monotonic() + timeout_s
        while len(self.answers) < target:
            assert time.monotonic() < deadline, f"load stalled at {len(self.answers)} answers"
            time.sleep(0.02)

    def statuses(self) -> Counter:
        return Counter(status for status, _, _ in self.answers)


@dataclass
class Deployed:
    url: str
    redis: RedisServer
    artifacts: Path
    bundle_id: str


@pytest.fixture(scope="module")
def deployed(
    trained_bundle: TrainedBundle, retriever: FakeRetriever, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary to run a Redis of this test's own")
    folder = tmp_path_factory.mktemp("fault-redis")
    redis = RedisServer(folder)
    redis.start()
    settings = StoreSettings(folder / "feast", "faults", "redis", redis.url)
    store = Store(settings)
    store.apply()
    frames = trained_bundle.frames
    store.materialize_frames(frames.users, frames.meta, frames.content)
    redis.save()
    artifacts = tmp_path_factory.mktemp("fault-artifacts")
    source = trained_bundle.artifacts_dir / trained_bundle.bundle_id
    for bundle_id in ("fault-a", "fault-b"):
        copy_bundle(source, artifacts, bundle_id)
    copy_bundle(source, artifacts, "fault-corrupt", corrupt_onnx=True)
    (artifacts / "CURRENT").write_text("fault-a\n")
    retriever.candidates = candidate_rows([f"t{i}" for i in range(0, 80, 2)])  # all in the track table
    retriever.status = 200
    env = {
        **os.environ,
        "ENCORE_ARTIFACTS_DIR": str(artifacts),
        "ENCORE_FEAST_DATA_DIR": str(settings.data_dir),
        "ENCORE_FEAST_PROJECT": settings.project,
        "ENCORE_FEAST_ONLINE": "redis",
        "ENCORE_REDIS_URL": redis.url,
        "ENCORE_RANKER_RETRIEVER_URL": retriever.url,
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_RANKER_CANDIDATES": "60",
        "ENCORE_RANKER_USER_CACHE_TTL_S": "0.5",  # warm users' entries expire during the outage: served stale
    }
    try:
        with service_process("ranker", env) as url:
            yield Deployed(url, redis, artifacts, "fault-a")
    finally:
        redis.stop()


def reload(url: str, bundle_id: str) -> httpx.Response:
    return httpx.post(f"{url}/admin/reload", json={"bundle_id": bundle_id}, headers={"X-API-Key": API_KEY}, timeout=60)


def test_bundle_swaps_under_load_fail_no_request_and_a_corrupt_bundle_is_refused(deployed: Deployed) -> None:
    with Load(deployed.url, WARM_USERS) as load:
        load.wait_for(20)
        for bundle_id in ("fault-b", "fault-a", "fault-b"):
            assert reload(deployed.url, bundle_id).status_code == 200
            load.wait_for(10)
        refused = reload(deployed.url, "fault-corrupt")
        assert refused.status_code == 422 and refused.json()["detail"]["code"] == "bundle_refused"
        load.wait_for(20)
    assert load.statuses() == Counter({200: len(load.answers)}), load.statuses()
    served = [bundle for _, _, bundle in load.answers]
    assert {"fault-a", "fault-b"} <= set(served)
    assert served[-1] == "fault-b"  # the refused bundle never served; the last good one still does
    assert httpx.get(f"{deployed.url}/readyz", timeout=10).json()["bundle_id"] == "fault-b"


def test_retriever_failing_under_load_degrades_to_popularity(deployed: Deployed, retriever: FakeRetriever) -> None:
    with Load(deployed.url, WARM_USERS) as load:
        load.wait_for(10)
        retriever.status = 503
        try:
            load.wait_for(20)
            body = httpx.get(f"{deployed.url}/recommend", params={"user_id": "u1"}, timeout=30).json()
        finally:
            retriever.status = 200
        load.wait_for(10)
    assert load.statuses() == Counter({200: len(load.answers)}), load.statuses()
    assert body["degraded"] is True and body["candidate_source"] == "popularity" and body["items"]
    assert "retriever unavailable" in body["degraded_reason"]
    assert any(degraded for _, degraded, _ in load.answers) and not load.answers[-1][1]


def test_redis_outage_under_load_answers_without_5xx_and_recovers(deployed: Deployed) -> None:
    with Load(deployed.url, WARM_USERS) as load:
        load.wait_for(30)  # warm users' profiles are now cached
        with Load(deployed.url, COLD_USERS[:10], threads=1) as cold_load:
            deployed.redis.stop()
            load.wait_for(30)
            cold_load.wait_for(5)
            during = httpx.get(f"{deployed.url}/recommend", params={"user_id": COLD_USERS[-1]}, timeout=30)
            warm = httpx.get(f"{deployed.url}/recommend", params={"user_id": WARM_USERS[0]}, timeout=30)
            assert httpx.get(f"{deployed.url}/readyz", timeout=30).status_code == 503  # not ready: store down
            deployed.redis.start()
            restarted = time.monotonic()
            recovered = None
            for user in COLD_USERS[10:]:  # users never answered from the store: each one needs a real read
                body = httpx.get(f"{deployed.url}/recommend", params={"user_id": user}, timeout=30).json()
                if not body["degraded"]:
                    recovered = time.monotonic() - restarted
                    break
                if time.monotonic() - restarted > RECOVERY_DEADLINE_S:
                    break
                time.sleep(0.1)
            load.wait_for(10)
    assert load.statuses() == Counter({200: len(load.answers)}), load.statuses()
    assert cold_load.statuses() == Counter({200: len(cold_load.answers)}), cold_load.statuses()
    assert during.status_code == 200 and during.json()["items"]
    assert during.json()["degraded"] is True and "user store unavailable" in during.json()["degraded_reason"]
    assert warm.status_code == 200 and warm.json()["degraded"] is False  # stale cached profile, in-process tracks
    assert any(degraded for _, degraded, _ in cold_load.answers)
    assert recovered is not None, f"still degraded {RECOVERY_DEADLINE_S} s after Redis came back: {body}"
    assert httpx.get(f"{deployed.url}/readyz", timeout=30).status_code == 200
