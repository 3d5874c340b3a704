"""The retriever serves without feast and torch in its process."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encore.store import Store
from tests.services.heavy_imports import serve_and_list_imports
from tests.services.retriever.conftest import API_KEY
from tests.services.retriever.planted import ENCODER, Planted
from training.train_recall import RecallArtifacts


def test_retriever_imports_neither_feast_nor_torch(
    artifacts_root: Path, store: Store, trained: RecallArtifacts, planted: Planted
) -> None:
    content = {
        "embedding": planted.centroids[0].astype(np.float32),
        "tokens": [1, 2],
        "typicality": 0.5,
        "tags": "",
        **ENCODER,
    }
    store.push_track("t-imports-upload", None, content)  # read at start-up: a store read in the service
    env = {
        "ENCORE_ARTIFACTS_DIR": str(artifacts_root),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
        "ENCORE_RETRIEVER_REFRESH_S": "0",
    }
    calls = [("GET", "/readyz", {}), ("GET", "/candidates", {"params": {"user_id": str(trained.user_ids[0])}})]
    result = serve_and_list_imports("retriever", env, calls)
    assert result == {"statuses": [200, 200], "loaded": []}
