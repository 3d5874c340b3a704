"""The skeleton every service shares: one error shape, request limits before parsing, health and metrics."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from encore.onnx_scorer import use_device
from encore.settings import ServiceSettings
from services.common.errors import OnError, add_error_handlers
from services.common.limits import BodyLimit, RequestGuard, json_limit
from services.common.observability import add_observability


def build_skeleton(
    app: FastAPI,
    service: str,
    settings: ServiceSettings,
    readiness: Callable[[], tuple[bool, dict]],
    *,
    write_routes: Collection[tuple[str, str]],
    route_limits: Mapping[str, BodyLimit] | None = None,
    coded: Mapping[type[Exception], Mapping[str, int]] | None = None,
    on_error: OnError | None = None,
) -> CollectorRegistry:
    """Mount the guard, the error handlers and /healthz, /readyz, /metrics; returns the metrics registry.

    The guard goes in first so it sits inside the request metrics, which then count its 401/413/503s.
    """
    app.state.settings = settings  # require_api_key reads the key from here
    use_device(settings.onnx_device)  # every ONNX session this process opens from now on
    app.add_middleware(
        RequestGuard,
        api_key=settings.api_key.get_secret_value(),
        write_routes=write_routes,
        default_limit=json_limit(settings.max_json_bytes),
        route_limits=route_limits,
        max_in_flight=settings.max_in_flight,
    )
    add_error_handlers(app, coded, on_error)
    return add_observability(app, service, readiness)
