"""The retriever as deployed: the documented uvicorn command in a real process, called over TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from encore.store import Store
from tests.services.retriever.conftest import API_KEY
from tests.services.retriever.planted import ENCODER, Planted
from training.train_recall import RecallArtifacts

REPO_ROOT = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 120  # two busy cores: imports alone can take many seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uvicorn_process_serves_candidates_and_new_items(
    artifacts_root: Path, store: Store, trained: RecallArtifacts, planted: Planted
) -> None:
    port = _free_port()
    env = os.environ | {
        "ENCORE_ARTIFACTS_DIR": str(artifacts_root),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
        "ENCORE_RETRIEVER_REFRESH_S": "0",
    }
    command = [sys.executable, "-m", "uvicorn", "services.retriever.main:create_app", "--factory"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], cwd=REPO_ROOT, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, f"uvicorn exited with {process.returncode}"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the retriever did not become ready"
            time.sleep(0.3)
        with httpx.Client(base_url=url, timeout=10) as client:
            user = str(trained.user_ids[0])
            body = client.get("/candidates", params={"user_id": user, "k": 5}).json()
            assert body["bundle_id"] == "b1" and body["source"] == "bpr" and len(body["candidates"]) == 5
            item = {"track_id": "tcp-upload", "embedding": planted.centroids[0].tolist(), **ENCODER}
            added = client.post("/items", json=item, headers={"X-API-Key": API_KEY})
            assert added.status_code == 200 and added.json()["cold_items"] >= 1
            assert 'service="retriever"' in client.get("/metrics").text
    finally:
        process.terminate()
        process.wait(timeout=20)
