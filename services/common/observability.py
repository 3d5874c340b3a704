"""/healthz, /readyz and /metrics for every service, and every Prometheus metric the services export.

The metrics are declared here, next to each other, so their names (which dashboards and tests read) live in one
place: the HTTP ones every service has (recorded by `RequestMetrics`, services/common/middleware.py), then
each service's own. Each app registers them on its own registry, not the global one, so several apps can live
in one test process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.common.errors import error_response, public_message
from services.common.middleware import RequestMetrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)
RANKER_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
EMBEDDER_STAGE_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class HttpMetrics:
    """Every service: requests and their latency, by route template (never the raw path: ids would explode it)."""

    requests: Counter  # by service, route, method, status
    latency: Histogram  # by service, route, method

    @classmethod
    def register(cls, registry: CollectorRegistry) -> HttpMetrics:
        labels = ["service", "route", "method"]
        requests = Counter("encore_http_requests", "HTTP requests", [*labels, "status"], registry=registry)
        latency = Histogram(
            "encore_http_request_seconds", "HTTP request latency", labels, buckets=LATENCY_BUCKETS, registry=registry
        )
        return cls(requests, latency)


@dataclass(frozen=True)
class RankerMetrics:
    stage_seconds: Histogram  # by step of GET /recommend: user_features, retrieve, item_features, score, order
    degraded: Counter  # by reason: answers served without some part (store, retriever, activity down)

    @classmethod
    def register(cls, registry: CollectorRegistry) -> RankerMetrics:
        stages = Histogram(
            "encore_ranker_stage_seconds",
            "Time per recommend step",
            ["stage"],
            buckets=RANKER_STAGE_BUCKETS,
            registry=registry,
        )
        degraded = Counter("encore_ranker_degraded", "Recommendations served degraded", ["reason"], registry=registry)
        return cls(stages, degraded)


@dataclass(frozen=True)
class EmbedderMetrics:
    uploads: Counter  # by outcome: "ok" or the error code
    # by stage of POST /embed: read, decode, encode, store, notify; and parts of encode the encoder times
    # (MusiCNN: encode_resample, encode_mel, encode_network; the rest of encode is tokens and tags)
    stage_seconds: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> EmbedderMetrics:
        uploads = Counter("encore_embedder_uploads", "POST /embed outcomes", ["outcome"], registry=registry)
        stages = Histogram(
            "encore_embedder_stage_seconds",
            "Time per upload stage",
            ["stage"],
            buckets=EMBEDDER_STAGE_BUCKETS,
            registry=registry,
        )
        return cls(uploads, stages)


@dataclass(frozen=True)
class RetrieverMetrics:
    candidates: Counter  # by source: how often users fall back to popularity
    reloads: Counter  # by outcome: a refused bundle must be visible on a dashboard
    items: Counter  # POST /items and store pick-ups, by status

    @classmethod
    def register(cls, registry: CollectorRegistry, cold_items: Callable[[], int]) -> RetrieverMetrics:
        """`cold_items`: how many cold tracks the index holds now, read at every scrape."""
        cold = Gauge("encore_retriever_cold_items", "Cold tracks retrievable through projection", registry=registry)
        cold.set_function(cold_items)
        return cls(
            candidates=Counter("encore_retriever_candidates", "Candidate lists served", ["source"], registry=registry),
            reloads=Counter("encore_retriever_reloads", "Bundle reload attempts", ["outcome"], registry=registry),
            items=Counter("encore_retriever_items", "New tracks offered to the index", ["status"], registry=registry),
        )


def add_observability(app: FastAPI, service: str, readiness: Callable[[], tuple[bool, dict]]) -> CollectorRegistry:
    """Mount the three routes and the request metrics; returns the app's own registry for the service's metrics."""
    registry = CollectorRegistry()
    http = HttpMetrics.register(registry)
    app.add_middleware(RequestMetrics, service=service, requests=http.requests, latency=http.latency)

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
