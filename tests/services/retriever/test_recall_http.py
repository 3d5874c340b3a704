"""Served candidates match the offline evaluation: Recall@200 through GET /candidates of a real uvicorn process
equals the offline Recall@200 of the same bundle and test users, for each of the four recall models."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from encore.store import Store, StoreSettings
from tests.conftest import service_process
from tests.services.retriever.conftest import API_KEY, write_bundle
from tests.services.retriever.planted import ENCODER, Planted
from training.models.recall import RECALL_MODELS
from training.recall_metrics import grouped
from training.train_recall import RecallConfig, fit_recall, split_plays

STARTUP_TIMEOUT_S = 120
K = 200


def test_http_recall_at_200_equals_offline_recall_for_every_model(tmp_path: Path, planted: Planted) -> None:
    # A store of its own: tracks other tests pushed to the shared one would join the candidates as new tracks,
    # while offline recall ranks the bundle's items only.
    store = Store(StoreSettings(data_dir=tmp_path / "feast", project="recall_http"))
    store.apply()
    # lr 0.01 for all: well-trained vectors keep the 200th and 201st scores apart, so float32 rounding (batched
    # offline vs one user at a time served) cannot swap them.
    cfg = RecallConfig(
        dim=16, epochs=8, lr=0.01, batch_size=512, valid_fraction=0.1, test_fraction=0.2, ks=(K,), seed=5
    )
    data = split_plays(planted.interactions, (planted.track_ids, planted.content), encoder=ENCODER, config=cfg)
    users, truth = grouped(*data.test)
    test_items = {
        str(data.user_ids[u]): set(data.item_ids[items].tolist()) for u, items in zip(users, truth, strict=True)
    }
    root = tmp_path / "artifacts"
    offline = {}
    for model in RECALL_MODELS:
        artifacts = fit_recall(data, cfg, model=model)
        offline[model] = artifacts.metrics[f"recall@{K}"]
        write_bundle(root, model.lower(), artifacts, make_current=model == "BPR")
    assert len(set(offline.values())) == len(offline)  # four different models, four different answers

    env = os.environ | {
        "ENCORE_ARTIFACTS_DIR": str(root),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
        "ENCORE_RETRIEVER_REFRESH_S": "0",
        "ENCORE_RETRIEVER_INDEX": "exact",
        "ENCORE_RETRIEVER_FOLDIN_PRIOR": "0",  # the models' own vectors, as offline evaluation scores them
    }
    with service_process("retriever", env, STARTUP_TIMEOUT_S) as url, httpx.Client(base_url=url, timeout=30) as client:
        for model in RECALL_MODELS:
            reload = client.post("/admin/reload", json={"bundle_id": model.lower()}, headers={"X-API-Key": API_KEY})
            assert reload.status_code == 200, reload.text
            recalls = []
            for user, relevant in test_items.items():
                body = client.get("/candidates", params={"user_id": user, "k": K}).json()
                assert body["source"] == model.lower() and body["bundle_id"] == model.lower()
                found = {c["track_id"] for c in body["candidates"]}
                assert len(found) == K
                recalls.append(len(found & relevant) / len(relevant))
            assert float(np.mean(recalls)) == pytest.approx(offline[model], abs=1e-6), model
