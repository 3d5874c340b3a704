"""The embedder on its ONNX/numpy runtimes never imports torch: Feast (its writes) is imported with torch kept out."""

from __future__ import annotations

from pathlib import Path

from encore.store import Store
from tests.services.embedder.helpers import API_KEY, tone, wav_bytes
from tests.services.heavy_imports import serve_and_list_imports


def test_embedder_writes_through_feast_without_torch(
    artifacts_dir: Path, store: Store, retriever, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(tone(330, 3.0)))
    env = {
        "ENCORE_ARTIFACTS_DIR": str(artifacts_dir),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_ENCODER": "mfcc",
        "ENCORE_EMBEDDER_RETRIEVER_URL": retriever.url,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
    }
    upload = {
        "files": {"file": ["clip.wav", str(clip)]},
        "data": {"track_id": "t-imports"},
        "headers": {"X-API-Key": API_KEY},
    }
    result = serve_and_list_imports("embedder", env, [("GET", "/readyz", {}), ("POST", "/embed", upload)])
    assert result == {"statuses": [200, 200], "loaded": ["feast"]}
