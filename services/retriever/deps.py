"""Annotated dependencies: a route's signature reads as the list of what it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from encore.settings import RetrieverSettings
from services.common.errors import ServiceError
from services.common.observability import RetrieverMetrics
from services.retriever.search import Retriever

# `async def` although none awaits: FastAPI runs a plain `def` dependency in its thread pool, one thread round
# trip per dependency and request on the hot path of GET /candidates.


async def _settings(request: Request) -> RetrieverSettings:
    return request.app.state.settings


async def _retriever(request: Request) -> Retriever:
    return request.app.state.retriever


async def _loaded_retriever(request: Request) -> Retriever:
    retriever: Retriever = request.app.state.retriever
    if not retriever.loaded:
        raise ServiceError(503, "not_ready", "no bundle loaded yet; see /readyz")
    return retriever


async def _metrics(request: Request) -> RetrieverMetrics:
    return request.app.state.metrics


async def _k(
    settings: Annotated[RetrieverSettings, Depends(_settings)],
    k: Annotated[
        int | None,
        Query(
            description="How many candidates (1..ENCORE_RETRIEVER_MAX_K); default ENCORE_RETRIEVER_DEFAULT_K",
            examples=[100],
        ),
    ] = None,
) -> int:
    k = settings.retriever_default_k if k is None else k
    if not 1 <= k <= settings.retriever_max_k:
        raise ServiceError(422, "invalid_request", f"k must be between 1 and {settings.retriever_max_k}")
    return k


SettingsDep = Annotated[RetrieverSettings, Depends(_settings)]
RetrieverDep = Annotated[Retriever, Depends(_retriever)]
LoadedRetrieverDep = Annotated[Retriever, Depends(_loaded_retriever)]
MetricsDep = Annotated[RetrieverMetrics, Depends(_metrics)]
KDep = Annotated[int, Depends(_k)]
