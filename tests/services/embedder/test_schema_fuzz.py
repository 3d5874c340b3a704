"""schemathesis against the embedder's OpenAPI schema (real bundle, real store): no 5xx, no off-schema answer.

Generated uploads are random bytes, so every /embed answer is a coded 4xx; nothing may be written for them.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from encore.store import Store
from tests.schema_fuzz import fuzz_app
from tests.services.embedder.helpers import AUTH, offline_parts


def test_embedder_schema_holds_for_generated_requests(client: TestClient, store: Store) -> None:
    before = offline_parts(store)
    sent = fuzz_app(client, headers=AUTH, max_examples=20)
    assert {"POST /embed", "GET /tracks/{track_id}", "POST /admin/reload"} <= set(sent) and min(sent.values()) >= 1
    assert offline_parts(store) == before
    assert client.get("/readyz").status_code == 200  # fuzzed reloads were refused; the bundle still serves
