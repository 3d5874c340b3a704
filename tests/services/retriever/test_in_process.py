"""ENCORE_RANKER_RETRIEVAL=inprocess: the retriever inside the ranker answers as the retriever service does.

The retriever runs as deployed (the documented uvicorn command, over TCP); the ranker's two retrieval steps,
`Retrieve` (HTTP) and `RetrieveInProcess`, are asked the same requests, and must answer the same Candidates:
ids, cold flags, source and history. Then the ranker app itself runs in-process mode from a bundle holding both
parts: /readyz says so, /recommend and the listening room's reads are served, reloads move both parts, and the
process still imports neither feast nor torch.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from encore.artifacts import BundleBuilder, current_bundle_path
from encore.settings import RankerSettings, RetrieverSettings
from encore.store import Store, StoreSettings
from services.ranker.main import create_app
from services.ranker.pipeline import NO_RECENT, Candidates, Recent, Retrieve, RetrieveInProcess
from tests.conftest import service_process
from tests.services.heavy_imports import serve_and_list_imports
from tests.services.ranker.conftest import TrainedBundle, trained_bundle  # noqa: F401 - the ranker's fixture
from tests.services.retriever.conftest import write_bundle
from tests.services.retriever.planted import ENCODER, Planted
from training.train_recall import RecallArtifacts

pytestmark = pytest.mark.timeout(900)
API_KEY = "inprocess-key"
N = 50
PUSHED = ("pushed-a", "pushed-b")  # tracks in the store but not in the bundle: cold candidates for both paths


@pytest.fixture
def pushed_store(tmp_path: Path, planted: Planted) -> Store:
    """A store of its own holding two tracks pushed after the bundle (others' pushes would differ by timing)."""
    store = Store(StoreSettings(data_dir=tmp_path / "feast", project=f"inproc_{uuid.uuid4().hex[:8]}"))
    store.apply()
    for track_id, centroid in zip(PUSHED, planted.centroids[:2], strict=True):
        content = {"embedding": centroid.astype(np.float32), "tokens": [0, 1], "typicality": 0.5, "tags": ""}
        store.push_track(track_id, None, {**content, **ENCODER})
    return store


def retriever_env(root: Path, store: Store) -> dict[str, str]:
    return os.environ | {
        "ENCORE_ARTIFACTS_DIR": str(root),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
        "ENCORE_RETRIEVER_REFRESH_S": "0",
    }


def wait_for_cold(count: Callable[[], int], deadline_s: float = 60) -> None:
    """Until `count()` (cold items held) reaches the pushed tracks: the pick-up runs in the background."""
    deadline = time.monotonic() + deadline_s
    while count() < len(PUSHED):
        assert time.monotonic() < deadline, "the pushed tracks were not picked up"
        time.sleep(0.1)


def requests_to_compare(trained: RecallArtifacts, popular: list[str]) -> list[tuple[str, Recent]]:
    """(user id, recent events) pairs: known users, unknown ones with and without plays, with exclusions."""
    known, other = str(trained.user_ids[0]), str(trained.user_ids[1])
    items = [str(t) for t in trained.item_ids[:6]]
    return [
        (known, NO_RECENT),
        (other, Recent(exclude=items[:4], played=items[:2])),  # a known user's recent plays blend in
        ("new-listener", Recent(exclude=items[:3], played=items[:3])),  # fold-in
        ("new-listener", Recent(exclude=[PUSHED[0]], played=[PUSHED[0]])),  # fold-in of a pushed track
        ("stranger", NO_RECENT),  # popularity
        ("stranger", Recent(exclude=popular[:3], played=[])),  # popularity less recent tracks
        ("stranger", Recent(exclude=["no-such-track"], played=["no-such-track"])),  # nothing to fold in
    ]


async def both_answers(url: str, root: Path, store: Store, cases: list[tuple[str, Recent]]) -> list[tuple]:
    """(over HTTP, in-process) Candidates per case."""
    http = Retrieve(url, timeout_s=10)
    local = RetrieveInProcess(RetrieverSettings(artifacts_dir=root, retriever_refresh_s=0), store)
    http.load()
    local.load()
    try:
        local.reload(current_bundle_path(root))
        await asyncio.to_thread(wait_for_cold, lambda: len(local.retriever.index.cold))
        return [(await http(u, N, [], r), await local(u, N, [], r)) for u, r in cases]
    finally:
        await http.close()
        await local.close()


def test_in_process_candidates_equal_the_retriever_services(
    tmp_path: Path,
    pushed_store: Store,
    trained: RecallArtifacts,
) -> None:
    root = tmp_path / "artifacts"
    write_bundle(root, "b1", trained)
    with service_process("retriever", retriever_env(root, pushed_store)) as url:
        wait_for_cold(lambda: httpx.get(f"{url}/readyz", timeout=5).json()["cold_items"])
        popular = [
            c["track_id"] for c in httpx.get(f"{url}/candidates", params={"user_id": "x", "k": 5}).json()["candidates"]
        ]
        cases = requests_to_compare(trained, popular)
        answers = asyncio.run(both_answers(url, root, pushed_store, cases))
    for (user_id, recent), (over_http, in_process) in zip(cases, answers, strict=True):
        assert over_http.degraded_reason is None, over_http.degraded_reason
        assert in_process == over_http, (user_id, recent)
    sources = [http.source for http, _ in answers]
    assert sources == ["bpr", "bpr", "foldin", "foldin", "popularity", "popularity", "popularity"]
    assert any(answers[0][0].cold.values()) and answers[0][0].history  # cold flags and history were compared


def test_in_process_retrieval_without_a_bundle_serves_popularity(tmp_path: Path, store: Store) -> None:
    async def ask() -> Candidates:
        local = RetrieveInProcess(RetrieverSettings(artifacts_dir=tmp_path, retriever_refresh_s=0), store)
        local.load()
        try:
            return await local("u1", 3, ["p1", "p2", "p3", "p4"], Recent(exclude=["p2"], played=[]))
        finally:
            await local.close()

    found = asyncio.run(ask())
    assert (found.track_ids, found.source) == (["p1", "p3", "p4"], "popularity")
    assert found.degraded_reason and found.degraded_reason.startswith("retriever unavailable: BundleError")


def test_in_process_retrieval_keeps_the_services_cap_on_k(tmp_path: Path, store: Store, trained: RecallArtifacts):
    """Over HTTP a k above ENCORE_RETRIEVER_MAX_K is refused (422, then popularity); in process it is capped."""
    root = tmp_path / "artifacts"
    write_bundle(root, "b1", trained)

    async def ask() -> Candidates:
        settings = RetrieverSettings(artifacts_dir=root, retriever_refresh_s=0, retriever_max_k=7)
        local = RetrieveInProcess(settings, store)
        local.load()
        try:
            local.reload(current_bundle_path(root))
            return await local(str(trained.user_ids[0]), N, [], NO_RECENT)
        finally:
            await local.close()

    found = asyncio.run(ask())
    assert (len(found.track_ids), found.source, found.degraded_reason) == (7, "bpr", None)


def both_parts(root: Path, bundle_id: str, ranker: TrainedBundle, retriever: RecallArtifacts | None) -> None:
    """A bundle with the ranker test bundle's files and, unless None, `retriever`'s component."""
    source = ranker.artifacts_dir / ranker.bundle_id
    with BundleBuilder(root, bundle_id, make_current=bundle_id == "both-1") as builder:
        for path in sorted(p for p in source.rglob("*") if p.is_file() and p.name != "manifest.json"):
            target = builder.path / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        manifest = json.loads((source / "manifest.json").read_text())
        builder.manifest.update({k: manifest[k] for k in ("feature_spec_hash", "components")})
        if retriever is not None:
            retriever.component().write(builder)


def test_the_ranker_serves_and_reloads_in_process(
    tmp_path: Path,
    pushed_store: Store,
    trained: RecallArtifacts,
    trained_bundle: TrainedBundle,  # noqa: F811 - the fixture imported above
) -> None:
    root = tmp_path / "artifacts"
    both_parts(root, "both-1", trained_bundle, trained)
    both_parts(root, "both-2", trained_bundle, trained)
    both_parts(root, "ranker-only", trained_bundle, None)
    settings = RankerSettings(
        artifacts_dir=root, api_key=API_KEY, ranker_retrieval="inprocess", retriever_url="http://127.0.0.1:9"
    )
    with TestClient(create_app(settings, pushed_store)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["retrieval"] == "inprocess"
        user = str(trained.user_ids[0])
        body = client.get("/recommend", params={"user_id": user, "k": 5}).json()
        assert (body["candidate_source"], body["degraded"]) == ("bpr", False)
        assert client.get("/ui/users").json()["users"]
        assert len(client.get("/ui/similar", params={"track_id": str(trained.item_ids[0])}).json()["similar"]) == 5
        assert client.get("/ui/similar", params={"track_id": "not-held"}).status_code == 404

        retriever = client.app.state.ranker.retrieve.retriever  # type: ignore[attr-defined]
        headers = {"X-API-Key": API_KEY}
        assert client.post("/admin/reload", json={"bundle_id": "both-2"}, headers=headers).status_code == 200
        assert retriever.index.bundle_id == "both-2"
        refused = client.post("/admin/reload", json={"bundle_id": "ranker-only"}, headers=headers)
        assert refused.status_code == 422  # no retriever part: this ranker could not serve it
        assert retriever.index.bundle_id == client.get("/readyz").json()["bundle_id"] == "both-2"


def test_the_in_process_ranker_imports_neither_feast_nor_torch(
    tmp_path: Path,
    pushed_store: Store,
    trained: RecallArtifacts,
    trained_bundle: TrainedBundle,  # noqa: F811 - the fixture imported above
) -> None:
    root = tmp_path / "artifacts"
    both_parts(root, "both-1", trained_bundle, trained)
    env = {
        "ENCORE_ARTIFACTS_DIR": str(root),
        "ENCORE_FEAST_DATA_DIR": str(pushed_store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": pushed_store.settings.project,
        "ENCORE_FEAST_ONLINE": "sqlite",
        "ENCORE_RANKER_RETRIEVAL": "inprocess",
        "ENCORE_RETRIEVER_REFRESH_S": "0",
    }
    user = str(trained.user_ids[0])
    calls = [("GET", "/readyz", {}), ("GET", "/recommend", {"params": {"user_id": user}}), ("GET", "/ui/users", {})]
    assert serve_and_list_imports("ranker", env, calls) == {"statuses": [200, 200, 200], "loaded": []}
