"""schemathesis against the retriever's OpenAPI schema (real bundle, real store): no 5xx, no off-schema answer.

Added for issue 8 (the three services' schemas); the retriever itself belongs to issue 6.
"""

from __future__ import annotations

from pathlib import Path

from encore.settings import RetrieverSettings
from encore.store import Store
from services.retriever.main import create_app
from tests.schema_fuzz import fuzz_app
from tests.services.retriever.conftest import API_KEY


def test_retriever_schema_holds_for_generated_requests(artifacts_root: Path, store: Store) -> None:
    from fastapi.testclient import TestClient

    settings = RetrieverSettings(artifacts_dir=artifacts_root, api_key=API_KEY, retriever_refresh_s=0)
    with TestClient(create_app(settings, store)) as client:
        sent = fuzz_app(client, headers={"X-API-Key": API_KEY}, max_examples=20)
        assert client.get("/readyz").status_code == 200
    assert "GET /candidates" in sent and min(sent.values()) >= 1
