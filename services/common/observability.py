"""/healthz, /readyz and /metrics for every service, plus request counting and latency histograms."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import error_response, public_message

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


class RequestMetrics:
    """Counts requests and observes latency per route template and status, as plain ASGI middleware.

    (Starlette's `@app.middleware("http")` wraps every request in extra tasks and streams; this costs less.)
    """

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


def add_observability(app: FastAPI, service: str, readiness: Callable[[], tuple[bool, dict]]) -> CollectorRegistry:
    """Mount the three routes and the request metrics; returns the app's own registry for extra metrics.

    One registry per app (not the global one) so several apps can live in one test process.
    """
    registry = CollectorRegistry()
    requests = Counter(
        "encore_http_requests", "HTTP requests", ["service", "route", "method", "status"], registry=registry
    )
    latency = Histogram(
        "encore_http_request_seconds",
        "HTTP request latency",
        ["service", "route", "method"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )

    app.add_middleware(RequestMetrics, service=service, requests=requests, latency=latency)

    router = APIRouter(tags=["ops"])

    @router.get("/healthz", summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok", "service": service}

    @router.get("/readyz", summary="Bundle and store loaded; 503 not_ready with the same details otherwise")
    def readyz() -> JSONResponse:
        ready, details = readiness()
        body = {"ready": ready, "service": service, **details}
        if ready:
            return JSONResponse(body)
        # the one error shape, its details inside; no host paths (unauthenticated; the log has them)
        public = {k: public_message(v) if isinstance(v, str) else v for k, v in body.items()}
        message = f"{service} is not ready (no bundle, store or encoder yet); see the fields here and the log"
        return error_response(503, "not_ready", message, **public)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    return registry
