"""The ranker as it is deployed: `uvicorn services.ranker.main:create_app --factory` in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from encore.store import StoreSettings
from tests.services.ranker.conftest import FakeRetriever, TrainedBundle, candidate_rows, free_port


@pytest.mark.slow
def test_uvicorn_process_serves_recommendations(
    trained_bundle: TrainedBundle, store_settings: StoreSettings, retriever: FakeRetriever
) -> None:
    retriever.candidates = candidate_rows([f"t{i}" for i in range(40)])
    port = free_port()
    env = {
        **os.environ,
        "ENCORE_ARTIFACTS_DIR": str(trained_bundle.artifacts_dir),
        "ENCORE_FEAST_DATA_DIR": str(store_settings.data_dir),
        "ENCORE_FEAST_PROJECT": store_settings.project,
        "ENCORE_FEAST_ONLINE": "sqlite",
        "ENCORE_RETRIEVER_URL": retriever.url,
        "ENCORE_API_KEY": "process-key",
        "ENCORE_DEFAULT_K": "8",
    }
    command = [sys.executable, "-m", "uvicorn", "services.ranker.main:create_app", "--factory", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # importing feast takes several seconds on two cores
        while True:
            if server.poll() is not None:
                pytest.fail(f"uvicorn exited with {server.returncode}:\n{server.stdout.read()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the ranker did not become ready")
            time.sleep(0.25)
        response = httpx.get(f"{base}/recommend", params={"user_id": "u5"}, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["bundle_id"] == trained_bundle.bundle_id and body["degraded"] is False
        assert len(body["items"]) == 8
        assert httpx.post(f"{base}/admin/reload", headers={"X-API-Key": "process-key"}, timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
