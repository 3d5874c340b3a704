"""The retriever as deployed: the documented uvicorn command in a real process, called over TCP."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from encore.store import Store
from tests.conftest import service_process
from tests.services.retriever.conftest import API_KEY
from tests.services.retriever.planted import ENCODER, Planted
from training.train_recall import RecallArtifacts

STARTUP_TIMEOUT_S = 120  # two busy cores: imports alone can take many seconds


def test_uvicorn_process_serves_candidates_and_new_items(
    artifacts_root: Path, store: Store, trained: RecallArtifacts, planted: Planted
) -> None:
    env = os.environ | {
        "ENCORE_ARTIFACTS_DIR": str(artifacts_root),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
        "ENCORE_RETRIEVER_REFRESH_S": "0",
    }
    with service_process("retriever", env, STARTUP_TIMEOUT_S) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            user = str(trained.user_ids[0])
            body = client.get("/candidates", params={"user_id": user, "k": 5}).json()
            assert body["bundle_id"] == "b1" and body["source"] == "bpr" and len(body["candidates"]) == 5
            item = {"track_id": "tcp-upload", "embedding": planted.centroids[0].tolist(), **ENCODER}
            added = client.post("/items", json=item, headers={"X-API-Key": API_KEY})
            assert added.status_code == 200 and added.json()["cold_items"] >= 1
            assert 'service="retriever"' in client.get("/metrics").text
