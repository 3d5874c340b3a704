"""schemathesis against the ranker's OpenAPI schema (real bundle, real store): no 5xx, no off-schema answer."""

from __future__ import annotations

from fastapi.testclient import TestClient

from encore.store import Store
from services.ranker.main import create_app
from tests.schema_fuzz import fuzz_app
from tests.services.ranker.conftest import FakeRetriever, TrainedBundle, candidate_rows
from tests.services.ranker.test_api import API_KEY, settings_for


def test_ranker_schema_holds_for_generated_requests(
    trained_bundle: TrainedBundle, store: Store, retriever: FakeRetriever
) -> None:
    retriever.candidates = candidate_rows([f"t{i}" for i in range(30)])
    retriever.status = 200
    with TestClient(create_app(settings_for(trained_bundle.artifacts_dir, retriever.url), store)) as client:
        sent = fuzz_app(client, headers={"X-API-Key": API_KEY})
        assert client.get("/readyz").json()["bundle_id"] == trained_bundle.bundle_id  # fuzzed reloads refused
    assert {"GET /recommend", "POST /admin/reload"} <= set(sent) and min(sent.values()) >= 1
