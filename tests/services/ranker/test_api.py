"""The ranker over HTTP (in-process): recommend, degraded paths, validation, reload, readiness, metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encore.artifacts import set_current
from encore.onnx_scorer import OnnxScorer
from encore.ranker_bundle import RankerComponent
from encore.settings import RankerSettings
from encore.store import Store
from services.ranker.main import create_app
from services.ranker.pipeline import RankedItem, Recommendation
from services.ranker.routes import ANSWER_JSON, Answer
from services.ranker.schemas import RecommendedTrack, RecommendResponse
from tests.services.error_shape import walk_routes
from tests.services.ranker.conftest import (
    CONTENT_ONLY,
    NOT_IN_STORE,
    FakeRetriever,
    TrainedBundle,
    candidate_rows,
    copy_bundle,
    free_port,
)

API_KEY = "test-key"
CANDIDATES = [f"t{i}" for i in range(0, 80, 3)] + [CONTENT_ONLY, NOT_IN_STORE]


def settings_for(artifacts_dir: Path, retriever_url: str, **overrides: object) -> RankerSettings:
    values = dict(
        artifacts_dir=artifacts_dir,
        retriever_url=retriever_url,
        retriever_timeout_s=2.0,
        api_key=API_KEY,
        default_k=5,
        max_k=50,
        candidates=100,
    )
    return RankerSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def client(trained_bundle: TrainedBundle, store: Store, retriever: FakeRetriever) -> Iterator[TestClient]:
    retriever.candidates = candidate_rows(CANDIDATES, cold={CONTENT_ONLY})
    with TestClient(create_app(settings_for(trained_bundle.artifacts_dir, retriever.url), store)) as test_client:
        yield test_client


def expected_ranking(bundle: TrainedBundle, user_id: str, track_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """Training-side encoding of the same rows, scored by OnnxScorer, ordered by score (ties: input order)."""
    scores = OnnxScorer(bundle.onnx_path).score(bundle.spec.encode_packed(bundle.frame_for(user_id, track_ids)))
    order = np.argsort(-scores, kind="stable")
    return [track_ids[i] for i in order], scores[order]


def test_recommend_ranks_candidates_with_the_bundle_model(
    client: TestClient, trained_bundle: TrainedBundle, retriever: FakeRetriever
) -> None:
    response = client.get("/recommend", params={"user_id": "u3", "k": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert retriever.requests[-1] == {"user_id": "u3", "k": 100}  # ENCORE_RANKER_CANDIDATES asked, not k
    assert body["degraded"] is False and body["degraded_reason"] is None
    assert (body["bundle_id"], body["model"], body["candidate_source"]) == (trained_bundle.bundle_id, "DCNv2", "bpr")
    items = body["items"]
    assert [item["rank"] for item in items] == list(range(1, 11))
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)

    ids, expected_scores = expected_ranking(trained_bundle, "u3", CANDIDATES)
    assert [item["track_id"] for item in items] == ids[:10]
    np.testing.assert_allclose(scores, expected_scores[:10], rtol=1e-6, atol=0)

    meta = trained_bundle.frames.meta.set_index("track_id")
    for item in items:
        if item["track_id"] in meta.index:
            row = meta.loc[item["track_id"]]
            assert (item["artist_id"], item["genre"], item["release_year"]) == (
                row["artist_id"],
                row["genre"],
                int(row["release_year"]),
            )
            assert item["reason"] == f"{row['genre']}, played by listeners like you"  # no tags stored for it


def test_candidates_without_features_are_scored_and_flagged(client: TestClient, trained_bundle: TrainedBundle) -> None:
    body = client.get("/recommend", params={"user_id": "u3", "k": 50}).json()
    by_id = {item["track_id"]: item for item in body["items"]}
    assert len(body["items"]) == len(CANDIDATES)
    assert by_id[CONTENT_ONLY]["cold"] is True and by_id[CONTENT_ONLY]["genre"] is None
    assert by_id[CONTENT_ONLY]["reason"] == "new track that sounds strings, classical, violin"  # its stored tags
    assert by_id[NOT_IN_STORE]["artist_id"] is None and by_id[NOT_IN_STORE]["release_year"] is None
    assert by_id["t0"]["cold"] is False


def old_response(result: Recommendation, query: str | None) -> RecommendResponse:
    """How the route built its answer before it serialized the pipeline's dataclasses directly."""
    return RecommendResponse(
        user_id=result.user_id,
        query=query,
        bundle_id=result.bundle_id,
        model=result.model,
        degraded=bool(result.degraded_reasons),
        degraded_reason="; ".join(result.degraded_reasons) or None,
        candidate_source=result.candidate_source,
        items=[RecommendedTrack(**dataclasses.asdict(item)) for item in result.items],
    )


def test_answer_bytes_equal_the_response_model(client: TestClient) -> None:
    items = [
        RankedItem("t1", 0.8731, 1, "a17", "jazz", 1965, False, "jazz, played by listeners like you", ["jazz"], 0.25),
        RankedItem("up-\u00e9", 1e-9, 2, None, None, None, True, "new upload", [], None),
        RankedItem("t3", 0.1 + 0.2, 3, "a", "rock", 2024, False, 'say "hi"\n', ["a", "b", "c"]),
    ]
    cases = [
        (Recommendation("u1", "b1", "DCNv2", "bpr", items), None),
        (Recommendation("u2", "b1", "DCNv2", "popularity", items[1:], ["retriever unavailable: x", "user store"]), "q"),
        (Recommendation("u3", "b1", "DCNv2", "foldin", []), "mellow acoustic guitar"),
    ]
    for result, query in cases:
        assert ANSWER_JSON.dump_json(Answer.of(result, query)) == old_response(result, query).model_dump_json().encode()
    for params in ({"user_id": "u3", "k": 10}, {"user_id": "u3", "k": 50}, {"user_id": "nobody"}):
        response = client.get("/recommend", params=params)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        body = RecommendResponse.model_validate_json(response.content)  # the schema the OpenAPI page shows
        assert body.model_dump_json().encode() == response.content


def test_unknown_user_still_gets_an_answer(client: TestClient, trained_bundle: TrainedBundle) -> None:
    response = client.get("/recommend", params={"user_id": "someone-new"})
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 5  # default_k
    ids, scores = expected_ranking(trained_bundle, "someone-new", CANDIDATES)
    assert [item["track_id"] for item in body["items"]] == ids[:5]
    np.testing.assert_allclose([item["score"] for item in body["items"]], scores[:5], rtol=1e-6, atol=0)


@pytest.mark.parametrize("k", ["0", "51", "-3"])
def test_k_out_of_range_is_a_422_with_a_message(client: TestClient, k: str) -> None:
    response = client.get("/recommend", params={"user_id": "u1", "k": k})
    assert response.status_code == 422
    assert response.json()["detail"] == {"code": "invalid_request", "message": f"k must be between 1 and 50, got {k}"}


def test_bad_k_and_missing_user_are_422(client: TestClient) -> None:
    assert client.get("/recommend", params={"user_id": "u1", "k": "many"}).status_code == 422
    assert client.get("/recommend").status_code == 422


def test_retriever_down_serves_popularity_degraded(trained_bundle: TrainedBundle, store: Store) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with TestClient(create_app(settings_for(trained_bundle.artifacts_dir, dead, candidates=20), store)) as client:
        response = client.get("/recommend", params={"user_id": "u3", "k": 7})
        metrics = client.get("/metrics").text
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is True and body["degraded_reason"].startswith("retriever unavailable")
    assert body["candidate_source"] == "popularity"
    popular = trained_bundle.frames.meta.sort_values("popularity", ascending=False)["track_id"].tolist()[:20]
    ids, _ = expected_ranking(trained_bundle, "u3", popular)
    assert [item["track_id"] for item in body["items"]] == ids[:7]
    assert 'encore_ranker_degraded_total{reason="retriever unavailable"} 1.0' in metrics


def test_retriever_error_status_degrades_too(client: TestClient, retriever: FakeRetriever) -> None:
    retriever.status = 500
    try:
        body = client.get("/recommend", params={"user_id": "u2"}).json()
    finally:
        retriever.status = 200
    assert body["degraded"] is True and "HTTP 500" in body["degraded_reason"]
    assert body["candidate_source"] == "popularity"


def test_readyz_reports_providers_and_metrics_count_requests(client: TestClient, trained_bundle) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["bundle_id"] == trained_bundle.bundle_id
    assert body["onnx_providers"] == ["CPUExecutionProvider"] and body["store_reachable"] is True
    assert body["retrieval"] == "http"  # ENCORE_RANKER_RETRIEVAL's default
    assert body["feature_spec_hash"] == trained_bundle.spec.hash and body["tracks_in_table"] > 0
    assert client.get("/healthz").json() == {"status": "ok", "service": "ranker"}
    client.get("/recommend", params={"user_id": "u9"})
    metrics = client.get("/metrics").text
    assert 'encore_http_requests_total{method="GET",route="/recommend",service="ranker",status="200"}' in metrics
    assert 'encore_ranker_stage_seconds_count{stage="score"}' in metrics


def test_not_ready_before_a_bundle_then_reload_loads_one(
    trained_bundle: TrainedBundle, store: Store, retriever: FakeRetriever, tmp_path: Path
) -> None:
    empty_root = tmp_path / "artifacts"  # no CURRENT yet
    with TestClient(create_app(settings_for(empty_root, retriever.url), store)) as client:
        assert client.get("/readyz").status_code == 503
        assert client.get("/readyz").json()["detail"]["onnx_providers"] == []
        assert client.get("/recommend", params={"user_id": "u1"}).status_code == 503
        copy_bundle(trained_bundle.artifacts_dir / trained_bundle.bundle_id, empty_root, "second")
        set_current(empty_root, "second")
        reloaded = client.post("/admin/reload", headers={"X-API-Key": API_KEY})
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json() == {"bundle_id": "second", "previous_bundle_id": None}
        assert client.get("/readyz").status_code == 200
        assert client.get("/recommend", params={"user_id": "u1"}).json()["bundle_id"] == "second"


def test_reload_needs_the_api_key(client: TestClient) -> None:
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401


def test_a_corrupt_bundle_is_refused_and_the_old_one_keeps_serving(
    trained_bundle: TrainedBundle, store: Store, retriever: FakeRetriever, caplog: pytest.LogCaptureFixture
) -> None:
    root = trained_bundle.artifacts_dir
    copy_bundle(root / trained_bundle.bundle_id, root, "corrupt", corrupt_onnx=True)
    with TestClient(create_app(settings_for(root, retriever.url), store)) as client:
        before = client.get("/recommend", params={"user_id": "u4", "k": 10}).json()
        refused = client.post("/admin/reload", json={"bundle_id": "corrupt"}, headers={"X-API-Key": API_KEY})
        assert refused.status_code == 422
        detail = refused.json()["detail"]
        assert detail["code"] == "bundle_refused" and detail["serving_bundle_id"] == trained_bundle.bundle_id
        assert detail["message"].startswith(f"bundle refused: bundle corrupt: {RankerComponent.ONNX} is not a valid")
        assert str(root) not in refused.text and "onnxruntime" not in refused.text.lower()  # the log has the details
        assert any(
            r.message.startswith("bundle refused:") and f"still serving {trained_bundle.bundle_id}" in r.message
            for r in caplog.records
        )
        missing = client.post("/admin/reload", json={"bundle_id": "no-such"}, headers={"X-API-Key": API_KEY})
        assert missing.status_code == 422 and "is missing or is not a plain" in missing.json()["detail"]["message"]
        assert str(root) not in missing.text
        escape = client.post("/admin/reload", json={"bundle_id": "../x"}, headers={"X-API-Key": API_KEY})
        assert escape.status_code == 422  # bundle ids never become paths outside the artifacts folder
        after = client.get("/recommend", params={"user_id": "u4", "k": 10}).json()
    assert after == before and after["bundle_id"] == trained_bundle.bundle_id


def test_openapi_documents_the_routes_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/recommend", "/admin/reload", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    components = schema["components"]["schemas"]
    assert components["RecommendResponse"]["examples"][0]["items"][0]["track_id"] == "t1007"
    assert "examples" in components["ReloadRequest"]
    assert "422" in schema["paths"]["/recommend"]["get"]["responses"]


def test_every_route_refuses_bad_requests_in_the_one_error_shape(client: TestClient) -> None:
    seen = walk_routes(client, {"X-API-Key": API_KEY})
    assert ("POST /admin/reload", 401) in seen and ("POST /admin/reload", 413) in seen
    assert ("GET /recommend", 422) in seen and ("GET /metrics", 405) in seen
