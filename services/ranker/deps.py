"""FastAPI dependencies: the app's ranker and settings, and the k check that needs the configured max."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request

from encore.settings import RankerSettings
from services.common.errors import ServiceError
from services.ranker.pipeline import Ranker


def get_settings(request: Request) -> RankerSettings:
    return request.app.state.settings


def get_ranker(request: Request) -> Ranker:
    return request.app.state.ranker


def get_serving_ranker(request: Request) -> Ranker:
    """The ranker, or 503 while no bundle is loaded."""
    ranker = get_ranker(request)
    if not ranker.holder.loaded:
        raise ServiceError(503, "not_ready", "no bundle loaded yet; see /readyz")
    return ranker


def get_k(
    request: Request,
    k: Annotated[
        int | None, Query(description="How many tracks to return (1..ENCORE_RANKER_MAX_K)", examples=[10])
    ] = None,
) -> int:
    settings = get_settings(request)
    if k is None:
        return settings.default_k
    if not 1 <= k <= settings.max_k:
        raise ServiceError(422, "invalid_request", f"k must be between 1 and {settings.max_k}, got {k}")
    return k
