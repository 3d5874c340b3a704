"""Configured limits (upload size while streaming, seconds encoded), a dead retriever, and an app with no bundle."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from encore.settings import EmbedderSettings
from encore.store import Store, StoreSettings
from services.embedder.main import create_app
from tests.conftest import free_port
from tests.services.embedder.helpers import API_KEY, AUTH, offline_parts, post_embed, tone, wav_bytes

LIMIT_MB = 0.25  # 262,144 bytes
LIMIT_BYTES = int(LIMIT_MB * 2**20)
MakeClient = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture(scope="module")
def tight(make_client: MakeClient) -> Iterator[TestClient]:
    """Small upload and duration limits, and a retriever URL nobody listens on."""
    with make_client(max_upload_mb=LIMIT_MB, max_audio_seconds=3, retriever_url=f"http://127.0.0.1:{free_port()}") as c:
        yield c


def _multipart(payload: bytes, boundary: str = "encoreboundary") -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode()


def _assert_too_large(response, store: Store, before: list[Path], track_id: str) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["detail"]["code"] == "too_large" and "0.25 MiB" in response.json()["detail"]["message"]
    assert offline_parts(store) == before and not store.track_exists(track_id)


def test_file_just_over_the_limit_is_refused_while_reading(tight: TestClient, store: Store) -> None:
    before = offline_parts(store)
    data = b"RIFF" + bytes(LIMIT_BYTES)  # the body fits the multipart allowance; the file part does not
    _assert_too_large(post_embed(tight, data, track_id="big:1"), store, before, "big:1")


def test_declared_oversized_body_is_refused_before_reading(tight: TestClient, store: Store) -> None:
    before = offline_parts(store)
    response = tight.post(
        "/embed",
        content=_multipart(bytes(4 * LIMIT_BYTES)),
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=encoreboundary"},
    )
    _assert_too_large(response, store, before, "big:2")


def test_streamed_body_without_length_is_cut_off_at_the_limit(tight: TestClient, store: Store) -> None:
    before = offline_parts(store)
    body = _multipart(bytes(4 * LIMIT_BYTES))

    def stream() -> Iterator[bytes]:  # a generator body goes out chunked: no Content-Length header
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    response = tight.post(
        "/embed", content=stream(), headers={**AUTH, "Content-Type": "multipart/form-data; boundary=encoreboundary"}
    )
    _assert_too_large(response, store, before, "big:3")


def test_long_audio_is_cut_and_said_so_and_a_dead_retriever_is_not_an_error(tight: TestClient, store: Store) -> None:
    response = post_embed(tight, wav_bytes(tone(440, 8.0, rate=8_000), rate=8_000), track_id="long:1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["truncated"] is True and body["seconds_used"] == pytest.approx(3.0)
    assert body["duration_seconds"] == pytest.approx(8.0) and "first 3.0 s of 8.0 s" in body["note"]
    assert body["retriever_notified"] is False and store.track_exists("long:1")


def test_without_a_bundle_not_ready_and_uploads_refused(make_client: MakeClient, tmp_path: Path) -> None:
    with make_client(artifacts_dir=tmp_path) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["detail"]["bundle_id"] is None
        assert ready.json()["detail"]["code"] == "not_ready"
        response = post_embed(client, wav_bytes(tone(440, 1.0)), headers={"X-API-Key": API_KEY})
        assert response.status_code == 503 and response.json()["detail"]["code"] == "not_ready"
        assert client.get("/healthz").status_code == 200


def test_a_failing_store_gives_503_and_not_ready(artifacts_dir: Path, tmp_path: Path) -> None:
    """A Redis store nobody listens on (never applied): reads and writes fail inside Feast/redis-py."""
    settings = StoreSettings(
        data_dir=tmp_path, project="down", online="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    app = create_app(
        EmbedderSettings(artifacts_dir=artifacts_dir, api_key=API_KEY, retriever_url="", encoder="mfcc"),
        store=Store(settings),
    )
    with TestClient(app) as client:
        assert client.get("/readyz").json()["detail"]["store"] is False
        response = post_embed(client, wav_bytes(tone(440, 1.0)), track_id="down:1")
        assert response.status_code == 503 and response.json()["detail"]["code"] == "store_unavailable"
        assert client.get("/tracks/down:1").status_code == 503
    assert not list(tmp_path.rglob("*.parquet"))


def _wait_until_the_slot_is_taken(url: str) -> None:
    """Probe with a form-less POST /embed: 422 while the held upload has not reached the app, 503 once it holds
    the slot (a probe that gets in first is refused for its missing file and writes nothing)."""
    deadline = time.monotonic() + 30
    while (status := httpx.post(f"{url}/embed", headers=AUTH, timeout=30).status_code) != 503:
        assert status == 422 and time.monotonic() < deadline, status
        time.sleep(0.02)


def _read_all(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


@contextmanager
def uvicorn_thread(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn over TCP from a thread of this process (its lifespan run): a held request's body
    streams from a socket the test controls, while other requests go through the same server."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_uploads_beyond_the_in_flight_cap_get_503_and_the_held_one_completes(
    make_app: Callable[..., FastAPI], store: Store
) -> None:
    """One upload holds the only slot (its body still streaming); a second is refused before its body is read."""
    body = _multipart(wav_bytes(tone(440, 1.0)))
    head = (
        f"POST /embed HTTP/1.1\r\nHost: test\r\nX-API-Key: {API_KEY}\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=encoreboundary\r\nConnection: close\r\n\r\n"
    ).encode()
    with uvicorn_thread(make_app(max_uploads_in_flight=1)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as held:
            held.sendall(head + body[:100])
            _wait_until_the_slot_is_taken(url)
            with httpx.Client(timeout=60) as client:
                files = {"file": ("a.wav", wav_bytes(tone(440, 1.0)), "audio/wav")}
                refused = client.post(f"{url}/embed", files=files, data={"track_id": "busy:1"}, headers=AUTH)
            held.sendall(body[100:])
            answer = _read_all(held)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["detail"]["code"] == "overloaded" and not store.track_exists("busy:1")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:500]
