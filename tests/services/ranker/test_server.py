"""The ranker as it is deployed: `uvicorn services.ranker.main:create_app --factory` in its own process."""

from __future__ import annotations

import os

import httpx
import pytest

from encore.store import StoreSettings
from tests.conftest import service_process
from tests.services.ranker.conftest import FakeRetriever, TrainedBundle, candidate_rows


@pytest.mark.slow
def test_uvicorn_process_serves_recommendations(
    trained_bundle: TrainedBundle, store_settings: StoreSettings, retriever: FakeRetriever
) -> None:
    retriever.candidates = candidate_rows([f"t{i}" for i in range(40)])
    env = {
        **os.environ,
        "ENCORE_ARTIFACTS_DIR": str(trained_bundle.artifacts_dir),
        "ENCORE_FEAST_DATA_DIR": str(store_settings.data_dir),
        "ENCORE_FEAST_PROJECT": store_settings.project,
        "ENCORE_FEAST_ONLINE": "sqlite",
        "ENCORE_RANKER_RETRIEVER_URL": retriever.url,
        "ENCORE_API_KEY": "process-key",
        "ENCORE_RANKER_DEFAULT_K": "8",
    }
    with service_process("ranker", env) as base:
        response = httpx.get(f"{base}/recommend", params={"user_id": "u5"}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["bundle_id"] == trained_bundle.bundle_id and body["degraded"] is False
        assert len(body["items"]) == 8
        assert httpx.post(f"{base}/admin/reload", headers={"X-API-Key": "process-key"}, timeout=30).status_code == 200
