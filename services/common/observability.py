"""/healthz, /readyz and /metrics for every service, plus request counting and latency histograms."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


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

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")  # the template, so ids do not explode label cardinality
        latency.labels(service, path, request.method).observe(time.perf_counter() - start)
        requests.labels(service, path, request.method, str(response.status_code)).inc()
        return response

    router = APIRouter(tags=["ops"])

    @router.get("/healthz", summary="The process is up")
    def healthz() -> dict:
        return {"status": "ok", "service": service}

    @router.get("/readyz", summary="Bundle and store loaded; 503 with details otherwise")
    def readyz() -> JSONResponse:
        ready, details = readiness()
        body = {"ready": ready, "service": service, **details}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    return registry
