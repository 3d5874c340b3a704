"""The HTTP server side of the limits: read deadlines and a connection cap that uvicorn itself lacks.

uvicorn closes idle keep-alive connections (`--timeout-keep-alive`) but has no deadline for a request's
headers or body, so a client that sends half a request and then one byte every few seconds holds a
connection (and a file descriptor) forever. Its `--limit-concurrency` counts every open connection, so
2,000 such clients would turn every real request into a 503. `GuardedHttpToolsProtocol` is uvicorn's own
httptools protocol with:
- a header deadline: a request's headers must be complete `header_timeout_s` after its first byte (or after
  the connection opened);
- a body deadline: its body must be complete `body_timeout_s` after the headers;
- a connection cap: a connection beyond `max_connections` is answered 503 and closed at once.
A request past a deadline gets 408 (when no answer has started) and its connection is closed. Requests the
app handles at once are capped separately, in RequestGuard (ENCORE_MAX_IN_FLIGHT).

    uvicorn services.ranker.main:create_app --factory $(python -m services.common.server)
"""

from __future__ import annotations

import asyncio
import json
import sys
from functools import lru_cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from encore.settings import ServiceSettings


@lru_cache(maxsize=1)
def _limits() -> ServiceSettings:
    return ServiceSettings()  # read once per worker process, from the same ENCORE_* variables as the app


def _raw_response(status: int, reason: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"detail": {"code": code, "message": message}}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + extra + "connection: close\r\n\r\n").encode() + body


MAX_HEADER_BYTES = 64 * 1024  # request line + headers; beyond it 431 (nginx's default buffers hold 32 KiB)
TIMED_OUT = _raw_response(408, "Request Timeout", "request_timeout", "the request was not received in time")
FULL = _raw_response(503, "Service Unavailable", "overloaded", "too many connections", "retry-after: 1\r\n")
MALFORMED = _raw_response(400, "Bad Request", "bad_request", "the request is not valid HTTP/1.1")
HEADERS_TOO_LARGE = _raw_response(431, "Request Header Fields Too Large", "too_large", "the headers are too large")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None
    _header_bytes: int | None = 0  # bytes of the current request's head so far; None while its body streams

    def data_received(self, data: bytes) -> None:
        if self._header_bytes is not None:
            self._header_bytes += len(data)
        super().data_received(data)
        # still in the head after parsing this chunk (None once the headers are complete): at most one read
        # of the event loop past the cap is ever held
        if self._header_bytes is not None and self._header_bytes > MAX_HEADER_BYTES:
            self._close_with(HEADERS_TOO_LARGE)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > _limits().max_connections:
            transport.write(FULL)
            transport.close()
            return
        self._arm(_limits().header_timeout_s)  # the first request's headers

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(_limits().header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._header_bytes = None
        self._arm(_limits().body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._header_bytes = 0
        self._disarm()  # idle time from here on is uvicorn's keep-alive timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP, in the one error shape instead of plain text."""
        self.logger.debug("malformed request: %s", msg)
        self.transport.write(MALFORMED)
        self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        self._close_with(TIMED_OUT)

    def _close_with(self, response: bytes) -> None:
        """Answer `response` unless the app has started its own, then close; the app sees a disconnect."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(response)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's next receive() sees http.disconnect
            cycle.message_event.set()
        self.transport.close()


def uvicorn_options(settings: ServiceSettings | None = None) -> list[str]:
    """The uvicorn command-line options that turn the limits on (the protocol reads the rest itself)."""
    settings = settings or _limits()
    return [
        "--http", "services.common.server:GuardedHttpToolsProtocol",
        "--timeout-keep-alive", str(settings.keep_alive_s),
    ]  # fmt: skip


if __name__ == "__main__":
    print(" ".join(uvicorn_options()))
    sys.exit(0)
