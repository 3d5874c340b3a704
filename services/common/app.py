"""The skeleton every service shares: one error shape, request limits before parsing, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from encore.onnx_scorer import use_device
from encore.settings import ServiceSettings
from services.common.docs import add_offline_docs
from services.common.errors import OnError, add_error_handlers
from services.common.middleware import BodyLimit, RequestGuard, json_limit
from services.common.observability import add_observability

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Timestamped lines on stderr (the stack sends it to logs/<service>.log): warnings from every library,
    ENCORE_LOG_LEVEL for our own loggers. Does nothing when the process has set up logging already."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    for name in ("encore", "services"):
        logging.getLogger(name).setLevel(level.upper())


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
    """Mount the guard, the error handlers, /docs (offline) and /healthz, /readyz, /metrics; returns the metrics
    registry.

    The guard goes in first so it sits inside the request metrics, which then count its 401/413/503s.
    """
    configure_logging(settings.log_level)
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
    add_offline_docs(app)
    return add_observability(app, service, readiness)
