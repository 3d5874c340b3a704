"""The plain ASGI middleware every request of every service passes through, before FastAPI reads or parses anything.

Outermost first (services/common/app.py mounts them):
- `RequestMetrics` counts requests and observes latency per route template and status;
- `RequestGuard` holds the request limits. FastAPI reads and parses a body before it runs a route's
  dependencies, so a key check in a dependency alone lets anyone make the server buffer a 50 MB body.
  `RequestGuard`, per request:
  1. caps requests in flight per process (503 + Retry-After beyond `max_in_flight`, and per route, e.g.
     uploads);
  2. on a write route, checks X-API-Key from the headers (401/403) before one byte of the body is read;
  3. refuses a Content-Length over the route's cap with 413 at once, and cuts a streamed (chunked) body off
     as it passes the cap: the app sees a disconnect, and its answer is replaced by the 413. Nothing past
     the cap is ever read, so nothing past it is held.
  Early refusals carry `Connection: close`, so the server does not read the rest of an unwanted body either.
(Starlette's `@app.middleware("http")` wraps every request in extra tasks and streams; plain ASGI costs less.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.auth import API_KEY_HEADER, api_key_problem
from services.common.errors import error_response

RETRY_AFTER_S = "1"


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int  # the whole request body
    message: str  # what a 413 says (which setting to raise)
    max_in_flight: int | None = None  # requests to this route held at once (uploads); None: no own cap


def json_limit(max_bytes: int) -> BodyLimit:
    return BodyLimit(max_bytes, f"the request body is larger than {max_bytes / 2**20:.2f} MiB (ENCORE_MAX_JSON_MB)")


class RequestMetrics:
    """Counts requests and observes latency per route template, method and status."""

    def __init__(self, app: ASGIApp, *, service: str, requests: Counter, latency: Histogram) -> None:
        self.app, self.service, self.requests, self.latency = app, service, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers if the app raises before starting a response

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")  # the template, so ids do not explode label cardinality
            method = scope["method"]
            self.latency.labels(self.service, path, method).observe(time.perf_counter() - start)
            self.requests.labels(self.service, path, method, str(status)).inc()


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str,
        write_routes: Collection[tuple[str, str]],
        default_limit: BodyLimit,
        route_limits: Mapping[str, BodyLimit] | None = None,
        max_in_flight: int = 256,
    ) -> None:
        self.app, self.api_key, self.write_routes = app, api_key, frozenset(write_routes)
        # A route with path parameters ("/users/{user_id}/events") matches any one segment in their place.
        self._write_patterns = [(method, _path_pattern(path)) for method, path in self.write_routes if "{" in path]
        self.default_limit, self.route_limits = default_limit, dict(route_limits or {})
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.route_in_flight = dict.fromkeys(self.route_limits, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.route_limits.get(path, self.default_limit)
        busy = self.in_flight >= self.max_in_flight
        if busy or (limit.max_in_flight is not None and self.route_in_flight[path] >= limit.max_in_flight):
            what = "requests" if busy else f"requests to {path}"
            await _refuse(scope, receive, send, 503, "overloaded", f"too many {what} at once; retry shortly")
            return
        self.in_flight += 1
        if path in self.route_in_flight:
            self.route_in_flight[path] += 1
        try:
            await self._checked(scope, receive, send, limit)
        finally:
            self.in_flight -= 1
            if path in self.route_in_flight:
                self.route_in_flight[path] -= 1

    def _is_write_route(self, method: str, path: str) -> bool:
        return (method, path) in self.write_routes or any(
            m == method and pattern.match(path) for m, pattern in self._write_patterns
        )

    async def _checked(self, scope: Scope, receive: Receive, send: Send, limit: BodyLimit) -> None:
        headers = Headers(scope=scope)
        if self._is_write_route(scope["method"], scope["path"]):
            problem = api_key_problem(headers.get(API_KEY_HEADER), self.api_key)
            if problem is not None:
                await _refuse(scope, receive, send, problem.status, problem.code, problem.message)
                return
        declared = headers.get("content-length")
        if declared is not None and not declared.isdigit():
            await _refuse(scope, receive, send, 400, "bad_request", "Content-Length is not a number")
            return
        if declared is not None and int(declared) > limit.max_bytes:
            await _refuse(scope, receive, send, 413, "too_large", limit.message)
            return
        if declared is None and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (a GET): nothing to count
            return
        await _limited(self.app, scope, receive, send, limit)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    headers = {"Connection": "close"}
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER_S
    await error_response(status, code, message, headers)(scope, receive, send)


async def _limited(app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: BodyLimit) -> None:
    """Run `app` with a receive that stops at `limit.max_bytes`; past it, answer 413 instead of the app."""
    received, over, answered = 0, False, False

    async def limited_receive() -> Message:
        nonlocal received, over
        if over:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit.max_bytes:
                over = True
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(message: Message) -> None:
        nonlocal answered
        if not over:
            await send(message)
        elif not answered:  # swap the app's answer to the cut-off body for the 413
            answered = True
            await _refuse(scope, receive, send, 413, "too_large", limit.message)

    try:
        await app(scope, limited_receive, guarded_send)
    except Exception:
        if not over:
            raise  # the app's own failure; past the cap it only tripped over the cut-off body
    if over and not answered:
        await _refuse(scope, receive, send, 413, "too_large", limit.message)


def _path_pattern(template: str) -> re.Pattern[str]:
    """ "/users/{user_id}/events" -> a pattern matching any one path segment in place of each parameter."""
    parts = ("[^/]+" if part.startswith("{") else re.escape(part) for part in template.split("/"))
    return re.compile("/".join(parts) + "$")
