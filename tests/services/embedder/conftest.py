"""Embedder fixtures: a real tiny bundle (codebooks fit on generated tones), a real SQLite store, a recording
retriever double (a real HTTP server at the boundary), and app factories."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from encore.audio import MfccEncoder
from encore.settings import EmbedderSettings, EncoreSettings
from encore.store import Store, StoreSettings
from services.embedder.main import create_app
from tests.services.embedder.helpers import API_KEY, GOOD_BUNDLE, OTHER_REVISION_BUNDLE, Recorder, tone, write_bundle

AUDIO_DIR = EncoreSettings().datasets_dir / "audio"


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good-1 (CURRENT, fit on the real MfccEncoder) and other-rev (codebooks of another encoder revision)."""
    root = tmp_path_factory.mktemp("artifacts")
    encoder = MfccEncoder()
    clips = [tone(f, 2.0, bpm=b) for f in (110, 220, 440, 880) for b in (90, 150)]
    layers = np.stack([encoder.encode(c) for c in clips])  # (8, 264): one layer, flat
    info = encoder.describe()
    write_bundle(root, GOOD_BUNDLE, layers, info, current=True)
    write_bundle(root, OTHER_REVISION_BUNDLE, layers, {**info, "revision": "0-old"}, current=False)
    return root


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One real SQLite store for the session (importing feast costs seconds); tests use unique track ids."""
    settings = StoreSettings(data_dir=tmp_path_factory.mktemp("feast"), project=f"emb_{uuid.uuid4().hex[:8]}")
    store = Store(settings)
    store.apply()
    return store


@pytest.fixture(scope="session")
def retriever() -> Iterator[Recorder]:
    """A real HTTP server standing in for the retriever at the HTTP boundary; answers 200 and records."""
    recorder = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            recorder.calls.append((self.path, dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def do_DELETE(self) -> None:  # noqa: N802 - DELETE /items/{id}: this retriever holds no uploads
            recorder.calls.append((self.path, dict(self.headers), {}))
            body = json.dumps({"track_id": self.path.rsplit("/", 1)[-1], "removed": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def make_app(artifacts_dir: Path, store: Store, retriever: Recorder) -> Callable[..., FastAPI]:
    """make_app(**settings) -> a fresh embedder app over the session's store, test bundles and retriever."""

    def make(**overrides: object) -> FastAPI:
        values = {"artifacts_dir": artifacts_dir, "api_key": API_KEY, "retriever_url": retriever.url}
        values = {"encoder": "mfcc", **values} | overrides  # the test bundles are MFCC
        return create_app(EmbedderSettings(**values), store=store)

    return make


@pytest.fixture(scope="session")
def make_client(make_app: Callable[..., FastAPI]) -> Callable[..., AbstractContextManager[TestClient]]:
    """make_client(**settings) -> a context manager giving a TestClient over a fresh app (lifespan run)."""

    @contextmanager
    def make(**overrides: object) -> Iterator[TestClient]:
        with TestClient(make_app(**overrides)) as client:
            yield client

    return make


@pytest.fixture(scope="module")
def client(make_client: Callable[..., AbstractContextManager[TestClient]]) -> Iterator[TestClient]:
    """The default app (50 MB, 600 s limits) shared by a module's tests."""
    with make_client() as client:
        yield client


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not (AUDIO_DIR / "manifest.csv").is_file():
        pytest.skip(f"real audio clips not found at {AUDIO_DIR} (the shared data folder beside the repo)")
    return AUDIO_DIR
