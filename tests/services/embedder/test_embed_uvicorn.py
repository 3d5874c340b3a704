"""The embedder as deployed: a real uvicorn process (the documented command), a real upload over TCP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from encore.store import Store
from tests.conftest import service_process
from tests.services.embedder.helpers import API_KEY, GOOD_BUNDLE, Recorder

pytestmark = pytest.mark.slow  # starting a second process imports feast again (10-40 s here)
REPO_ROOT = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 120  # importing feast alone takes 6-9 s on two busy cores


@pytest.fixture(scope="module")
def server(artifacts_dir: Path, store: Store, retriever: Recorder) -> Iterator[str]:
    env = os.environ | {
        "ENCORE_ARTIFACTS_DIR": str(artifacts_dir),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
        "ENCORE_EMBEDDER_RETRIEVER_URL": retriever.url,
        "ENCORE_EMBEDDER_MAX_UPLOAD_MB": "2",
        "ENCORE_ENCODER": "mfcc",  # the test bundles are MFCC
    }
    with service_process("embedder", env, STARTUP_TIMEOUT_S) as url:
        yield url


def test_upload_over_tcp_is_stored_and_announced(
    server: str, store: Store, retriever: Recorder, shared_audio: Path
) -> None:
    clip = (shared_audio / "gtzan_country.00000.wav").read_bytes()  # 30 s, 22.05 kHz mono
    files = {"file": ("country.wav", clip, "audio/wav")}
    form = {"track_id": "tcp:country", "genre": "country"}
    response = httpx.post(f"{server}/embed", files=files, data=form, headers={"X-API-Key": API_KEY}, timeout=60)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bundle_id"] == GOOD_BUNDLE and body["seconds_used"] == pytest.approx(30.0, abs=0.2)
    assert body["retriever_notified"] is True and store.track_exists("tcp:country")
    assert any(call[2]["track_id"] == "tcp:country" for call in retriever.calls)


def test_streamed_oversized_upload_is_refused(server: str, store: Store) -> None:
    boundary = "encoreboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()

    def stream() -> Iterator[bytes]:  # 8 MiB in 64 KiB chunks, no Content-Length
        yield head
        for _ in range(128):
            yield bytes(65_536)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"X-API-Key": API_KEY, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = httpx.post(f"{server}/embed", content=stream(), headers=headers, timeout=30)
    assert response.status_code == 413 and response.json()["detail"]["code"] == "too_large"
