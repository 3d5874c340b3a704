"""The ranker serves without feast and torch in its process (the online store is read in its own format)."""

from __future__ import annotations

from encore.store import StoreSettings
from tests.services.heavy_imports import serve_and_list_imports
from tests.services.ranker.conftest import FakeRetriever, TrainedBundle, candidate_rows


def test_ranker_imports_neither_feast_nor_torch(
    trained_bundle: TrainedBundle, store_settings: StoreSettings, retriever: FakeRetriever
) -> None:
    retriever.candidates = candidate_rows([*(f"t{i}" for i in range(40)), "t_not_in_store"])
    env = {
        "ENCORE_ARTIFACTS_DIR": str(trained_bundle.artifacts_dir),
        "ENCORE_FEAST_DATA_DIR": str(store_settings.data_dir),
        "ENCORE_FEAST_PROJECT": store_settings.project,
        "ENCORE_FEAST_ONLINE": "sqlite",
        "ENCORE_RANKER_RETRIEVER_URL": retriever.url,
        "ENCORE_API_KEY": "imports-key",
    }
    calls = [("GET", "/readyz", {}), ("GET", "/recommend", {"params": {"user_id": "u5"}})]
    result = serve_and_list_imports("ranker", env, calls)
    assert result == {"statuses": [200, 200], "loaded": []}
