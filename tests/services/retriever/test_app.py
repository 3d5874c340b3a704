"""The retriever over HTTP (TestClient runs the real app and its lifespan): routes, auth, reloads, metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encore.retriever_bundle import RetrieverComponent
from encore.settings import RetrieverSettings
from encore.store import Store
from services.retriever import routes
from services.retriever.main import create_app
from services.retriever.schemas import CandidatesResponse
from tests.services.error_shape import walk_routes
from tests.services.retriever.conftest import API_KEY, corrupt, write_bundle
from tests.services.retriever.planted import ENCODER, Planted
from training.train_recall import RecallArtifacts

AUTH = {"X-API-Key": API_KEY}


def _client(artifacts: Path, store: Store) -> TestClient:
    settings = RetrieverSettings(
        artifacts_dir=artifacts, api_key=API_KEY, retriever_max_k=500, retriever_default_k=10, retriever_refresh_s=0
    )
    return TestClient(create_app(settings, store))


@pytest.fixture
def client(artifacts_root: Path, store: Store) -> Iterator[TestClient]:
    with _client(artifacts_root, store) as client:
        yield client


def test_not_ready_until_a_bundle_is_loaded(tmp_path: Path, trained: RecallArtifacts, store: Store) -> None:
    root = tmp_path / "artifacts"
    with _client(root, store) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]["bundle_id"] is None
        assert client.get("/candidates", params={"user_id": "u0001"}).status_code == 503
        write_bundle(root, "first", trained)
        assert client.post("/admin/reload", headers=AUTH).json()["bundle_id"] == "first"
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["store"] is True and ready.json()["bundle_id"] == "first"


def test_candidates_for_known_and_unknown_users(client: TestClient, trained: RecallArtifacts) -> None:
    user = str(trained.user_ids[0])
    body = client.get("/candidates", params={"user_id": user, "k": 25}).json()
    assert body["user_id"] == user and body["known_user"] and body["source"] == "bpr" and body["bundle_id"] == "b1"
    assert len(body["candidates"]) == 25 and set(body["candidates"][0]) == {"track_id", "score", "cold"}
    unknown = client.get("/candidates", params={"user_id": "newcomer"}).json()
    assert not unknown["known_user"] and unknown["source"] == "popularity"
    assert len(unknown["candidates"]) == 10  # ENCORE_RETRIEVER_DEFAULT_K


@pytest.mark.parametrize("k", [0, -3, 501])
def test_k_outside_its_range_is_a_clear_422(client: TestClient, k: int) -> None:
    response = client.get("/candidates", params={"user_id": "u0001", "k": k})
    assert response.status_code == 422
    assert response.json()["detail"] == {"code": "invalid_request", "message": "k must be between 1 and 500"}


def test_missing_user_id_is_422(client: TestClient) -> None:
    assert client.get("/candidates").status_code == 422
    assert client.get("/candidates", params={"user_id": ""}).status_code == 422


def test_reload_refuses_a_corrupt_bundle_and_switches_to_a_good_one(
    client: TestClient, artifacts_root: Path, trained: RecallArtifacts
) -> None:
    params = {"user_id": str(trained.user_ids[1]), "k": 30}
    before = client.get("/candidates", params=params).json()
    bad = write_bundle(artifacts_root, "broken", trained, make_current=False)
    corrupt(bad / RetrieverComponent.NAME / RetrieverComponent.VECTORS["item"])
    refused = client.post("/admin/reload", headers=AUTH, json={"bundle_id": "broken"})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail["code"] == "bundle_refused" and "does not match the manifest" in detail["message"]
    assert detail["serving_bundle_id"] == "b1"
    assert client.get("/candidates", params=params).json() == before
    assert client.post("/admin/reload", headers=AUTH, json={"bundle_id": "nowhere"}).status_code == 422
    assert client.post("/admin/reload", headers=AUTH, json={"bundle_id": "../b1"}).status_code == 422

    write_bundle(artifacts_root, "b2", trained)  # becomes CURRENT; an empty body reloads CURRENT
    switched = client.post("/admin/reload", headers=AUTH)
    assert switched.status_code == 200 and switched.json()["previous_bundle_id"] == "b1"
    assert client.get("/candidates", params=params).json()["bundle_id"] == "b2"


def test_admin_and_write_routes_need_the_api_key(client: TestClient, planted: Planted) -> None:
    item = {"track_id": "upload-x", "embedding": planted.centroids[0].tolist(), **ENCODER}
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/items", json=item).status_code == 401
    assert client.post("/items", json=item, headers={"X-API-Key": "wrong"}).status_code == 401


def test_posted_item_becomes_a_cold_candidate_for_matching_users(
    client: TestClient, planted: Planted, trained: RecallArtifacts
) -> None:
    users = [u for u, c in planted.user_clusters.items() if len(c) == 1 and u in set(trained.user_ids)]
    fan, cluster = users[0], next(iter(planted.user_clusters[users[0]]))
    item = {"track_id": "upload-y", "embedding": planted.centroids[cluster].tolist(), **ENCODER}
    added = client.post("/items", json=item, headers=AUTH)
    assert added.status_code == 200 and added.json() == {
        "track_id": "upload-y",
        "status": "added",
        "bundle_id": "b1",
        "cold_items": 1,
    }
    found = client.get("/candidates", params={"user_id": fan, "k": 100}).json()["candidates"]
    assert {"upload-y": True}.items() <= {c["track_id"]: c["cold"] for c in found}.items()


@pytest.mark.parametrize("off_loop", [False, True], ids=["on-the-loop", "large-catalogue-thread"])
def test_candidates_body_is_the_response_model_json(
    client: TestClient, planted: Planted, trained: RecallArtifacts, off_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route serializes the search's dataclasses directly: the bytes are what CandidatesResponse gives, for
    known, unknown, fold-in and cold answers alike; the same when a large catalogue is searched in the pool."""
    if off_loop:
        monkeypatch.setattr(routes, "THREAD_MIN_ITEMS", 0)
    fan = next(u for u, c in planted.user_clusters.items() if len(c) == 1 and u in set(trained.user_ids))
    cluster = next(iter(planted.user_clusters[fan]))
    item = {"track_id": "upload-z", "embedding": planted.centroids[cluster].tolist(), **ENCODER}
    assert client.post("/items", json=item, headers=AUTH).status_code == 200
    retriever = client.app.state.retriever
    played = [str(t) for t in trained.item_ids[:3]]
    asks = [(fan, 100, [], []), ("newcomer", 5, [], [played[0]]), ("newcomer", 20, played, [])]
    sources = set()
    for user_id, k, played_ids, exclude in asks:
        response = client.get("/candidates", params={"user_id": user_id, "k": k, "played": played_ids,
                                                     "exclude": exclude})  # fmt: skip
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        expected = CandidatesResponse.model_validate(
            retriever.candidates(user_id, k, played_ids, exclude), from_attributes=True
        )
        assert response.content == expected.model_dump_json().encode()
        sources.add(expected.source)
        assert any(c.cold for c in expected.candidates) or user_id != fan
    assert sources == {"bpr", "popularity", "foldin"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embedding": [0.1] * 15}, "length 15"),
        ({"encoder": "clap"}, "cannot be mixed"),
        ({"encoder_revision": "2"}, "cannot be mixed"),
    ],
)
def test_posted_item_that_does_not_fit_the_bundle_is_422(
    client: TestClient, planted: Planted, change: dict, message: str
) -> None:
    item = {"track_id": "upload-z", "embedding": planted.centroids[0].tolist(), **ENCODER, **change}
    response = client.post("/items", json=item, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"]["code"] == "item_refused"
    assert message in response.json()["detail"]["message"]


def test_metrics_count_requests_and_candidate_sources(client: TestClient) -> None:
    client.get("/candidates", params={"user_id": "newcomer"})
    text = client.get("/metrics").text
    assert 'encore_http_requests_total{method="GET",route="/candidates",service="retriever",status="200"}' in text
    assert 'encore_retriever_candidates_total{source="popularity"} 1.0' in text
    assert 'encore_retriever_reloads_total{outcome="loaded"} 1.0' in text
    assert "encore_retriever_cold_items 0.0" in text


def test_openapi_documents_parameters_and_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    parameters = {p["name"]: p for p in spec["paths"]["/candidates"]["get"]["parameters"]}
    assert parameters["k"]["description"] and parameters["user_id"]["description"]
    schemas = spec["components"]["schemas"]
    for name in ("CandidatesResponse", "CandidateOut", "ItemIn", "ItemOut", "ReloadRequest", "ReloadResponse"):
        assert schemas[name].get("examples"), name


def test_start_up_picks_up_tracks_pushed_to_the_store(artifacts_root: Path, store: Store, planted: Planted) -> None:
    track_id = f"pushed-before-start-{uuid.uuid4().hex[:8]}"
    content = {
        "embedding": planted.centroids[3].astype(np.float32),
        "tokens": [0, 1],
        "typicality": 0.5,
        "tags": "",
        **ENCODER,
    }
    store.push_track(track_id, None, content)
    with _client(artifacts_root, store) as client:
        retriever = client.app.state.retriever  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while track_id not in retriever.index.cold.index:  # the pick-up runs in the background after start
            assert time.monotonic() < deadline, "the start-up pick-up did not add the pushed track"
            time.sleep(0.05)
        assert client.get("/readyz").json()["cold_items"] >= 1


def test_every_route_refuses_bad_requests_in_the_one_error_shape(client: TestClient) -> None:
    seen = walk_routes(client, AUTH)
    assert ("POST /items", 401) in seen and ("POST /admin/reload", 401) in seen and ("GET /candidates", 422) in seen
    assert ("POST /items", 413) in seen and ("GET /healthz", 405) in seen


@pytest.mark.parametrize(
    "track_id", ["nul\x00id", "crlf\r\nid", "rtl\u202eid", "<script>alert(1)</script>", " ", "", "a b", "x" * 200]
)
def test_posted_item_with_a_bad_id_is_refused(client: TestClient, planted: Planted, track_id: str) -> None:
    item = {"track_id": track_id, "embedding": planted.centroids[0].tolist(), **ENCODER}
    response = client.post("/items", json=item, headers=AUTH)
    assert response.status_code == 422 and response.json()["detail"]["code"] == "invalid_request"
    assert "track_id" in response.json()["detail"]["message"]
    assert track_id not in _cold_ids(client, planted)


@pytest.mark.parametrize(
    ("value", "message"),
    [("NaN", "not finite"), ("Infinity", "not finite"), ("-Infinity", "not finite"), ("1e400", "not finite")]
    + [("3e38", "content bound 8"), ("-9.0", "content bound 8")],
)
def test_posted_item_with_non_finite_or_extreme_values_is_refused(
    client: TestClient, planted: Planted, value: str, message: str
) -> None:
    values = [f"{x:.6f}" for x in planted.centroids[0]]
    values[3] = value
    body = f'{{"track_id": "upload-bad", "embedding": [{", ".join(values)}], "encoder": "{ENCODER["encoder"]}", '
    body += f'"encoder_revision": "{ENCODER["encoder_revision"]}"}}'
    response = client.post("/items", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"]["code"] == "invalid_request"
    assert "embedding" in response.json()["detail"]["message"] and message in response.json()["detail"]["message"]
    assert "upload-bad" not in _cold_ids(client, planted)


def _cold_ids(client: TestClient, planted: Planted) -> set[str]:
    """Cold tracks a user of cluster 0 is offered (a refused item must not be among them)."""
    user = next(u for u, c in planted.user_clusters.items() if 0 in c)
    found = client.get("/candidates", params={"user_id": user, "k": 500}).json()["candidates"]
    return {c["track_id"] for c in found if c["cold"]}
