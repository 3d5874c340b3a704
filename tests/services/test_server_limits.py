"""GuardedHttpToolsProtocol in a real uvicorn server over TCP: slow headers and slow bodies are cut off with
408, oversized headers get 431, connections beyond the cap get 503 and are closed; the API key never appears
in `make run`'s example commands."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from services.common import server
from services.stack import Stack, curl_examples
from tests.conftest import free_port


async def echo_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"got %d" % len(body)})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    mp = pytest.MonkeyPatch()
    for name, value in {"HEADER_TIMEOUT_S": "0.5", "BODY_TIMEOUT_S": "0.5", "MAX_CONNECTIONS": "4"}.items():
        mp.setenv(f"ENCORE_{name}", value)
    server._limits.cache_clear()
    chosen = free_port()
    config = uvicorn.Config(
        echo_app, host="127.0.0.1", port=chosen, http=server.GuardedHttpToolsProtocol, log_level="warning"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.05)
    yield chosen
    instance.should_exit = True
    thread.join(10)
    mp.undo()
    server._limits.cache_clear()


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, then read until the server closes the connection (10 s safety bound, not a timing check)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def test_a_complete_request_is_served(port: int) -> None:
    answer = exchange(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert answer.startswith(b"HTTP/1.1 200") and b"got 3" in answer


def test_unfinished_headers_are_cut_off_with_408(port: int) -> None:
    answer = exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    assert answer.startswith(b"HTTP/1.1 408") and b'"code": "request_timeout"' in answer


def test_an_unfinished_body_is_cut_off_with_408(port: int) -> None:
    answer = exchange(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b")
    assert answer.startswith(b"HTTP/1.1 408")


def test_bytes_that_are_not_http_get_400_in_the_error_shape(port: int) -> None:
    answer = exchange(port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b'"code": "bad_request"' in answer


def test_oversized_headers_get_431(port: int) -> None:
    answer = exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (server.MAX_HEADER_BYTES + 10))
    assert answer.startswith(b"HTTP/1.1 431")


def test_connections_beyond_the_cap_get_503_and_are_closed(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server._limits(), "header_timeout_s", 60.0)  # the held connections must stay open
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        answer = exchange(port, b"")  # answered on connect: a request sent meanwhile could turn the close into a reset
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer
    finally:
        for conn in held:
            conn.close()


def test_make_run_never_prints_the_api_key() -> None:
    stack = Stack(env={"ENCORE_API_KEY": "s3cret-key-123"})
    text = curl_examples(stack, "song.wav", "u0")
    assert "s3cret-key-123" not in text and "$ENCORE_API_KEY" in text
