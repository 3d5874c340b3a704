"""HTTP routes of the ranker: GET /recommend and the authenticated POST /admin/reload (thin handlers), and the
dependencies they declare (the app's ranker and settings, the k check that needs the configured max)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import TypeAdapter

from encore.artifacts import BundleError
from encore.settings import RankerSettings
from services.common.auth import ApiKey
from services.common.errors import ServiceError, bundle_refused, error_responses
from services.ranker.bundle import resolve_bundle_path
from services.ranker.pipeline import RankedItem, Ranker, Recommendation
from services.ranker.schemas import RecommendResponse, ReloadRequest, ReloadResponse

QUERY = Query(
    min_length=1,
    max_length=200,
    description="Free text that steers the answer through the tracks' sound tags, e.g. 'mellow acoustic guitar'",
    examples=["classical strings"],
)
STEER_DESCRIPTION = """With `q`, the candidates are re-ordered by a blend of two ranks: `(1 - w) * p_ctr + w * p_q`,
where `p_ctr` is a candidate's rank score (1 = first, 0 = last of n) by click probability, `p_q` its rank score
by its match to the query (the mean cosine between the query and the track's top MusiCNN tags, both in
all-MiniLM-L6-v2's space; `query_match` in the answer), and `w` is ENCORE_RANKER_QUERY_WEIGHT (default 0.8).
`score` stays the click probability. An unknown user's candidates (popularity) are steered the same way.
Without the exported query encoder, a request with `q` answers 422 `query_unavailable`; without `q` nothing
changes."""


@dataclass(frozen=True)
class Answer:
    """RecommendResponse's fields in its order, over the pipeline's own RankedItem (RecommendedTrack's fields in
    its order): serialized as they are, without building and validating a model per track and again for the
    whole answer. tests/services/ranker/test_api.py checks the bytes equal RecommendResponse's."""

    user_id: str
    query: str | None
    bundle_id: str
    model: str
    degraded: bool
    degraded_reason: str | None
    candidate_source: str
    items: list[RankedItem]

    @classmethod
    def of(cls, result: Recommendation, query: str | None) -> Answer:
        reasons = result.degraded_reasons
        return cls(
            result.user_id, query, result.bundle_id, result.model, bool(reasons), "; ".join(reasons) or None,
            result.candidate_source, result.items,
        )  # fmt: skip


ANSWER_JSON = TypeAdapter(Answer)


def get_settings(request: Request) -> RankerSettings:
    return request.app.state.settings


# The dependencies are `async def` although they never await: FastAPI runs a plain `def` dependency in its thread
# pool, a round trip to another thread per dependency and request (~0.1 ms each, much more on a busy host).
async def get_ranker(request: Request) -> Ranker:
    return request.app.state.ranker


async def get_serving_ranker(request: Request) -> Ranker:
    """The ranker, or 503 while no bundle is loaded."""
    ranker: Ranker = request.app.state.ranker
    if not ranker.holder.loaded:
        raise ServiceError(503, "not_ready", "no bundle loaded yet; see /readyz")
    return ranker


async def get_k(
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


def build_router(settings: RankerSettings) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/recommend",
        response_model=RecommendResponse,
        tags=["ranker"],
        summary="Ranked tracks for a user: retrieve, add features, score with the CTR model, order",
        description=STEER_DESCRIPTION,
        responses=error_responses(413, 422, 503),
    )
    async def recommend(
        user_id: Annotated[
            str, Query(min_length=1, max_length=256, description="User id (unknown users still get an answer)")
        ],
        k: Annotated[int, Depends(get_k)],
        ranker: Annotated[Ranker, Depends(get_serving_ranker)],
        q: Annotated[str | None, QUERY] = None,
    ) -> Response:
        result = await ranker.recommend(user_id, k, q)
        return Response(ANSWER_JSON.dump_json(Answer.of(result, q)), media_type="application/json")

    @router.post(
        "/admin/reload",
        response_model=ReloadResponse,
        tags=["admin"],
        summary="Load, verify and swap in a bundle (X-API-Key); a refused bundle leaves the old one serving",
        dependencies=[ApiKey],
        responses=error_responses(401, 403, 413, 422, 503),
    )
    async def reload(
        ranker: Annotated[Ranker, Depends(get_ranker)],
        request: Annotated[ReloadRequest | None, Body()] = None,
    ) -> ReloadResponse:
        serving = ranker.holder.bundle.id if ranker.holder.bundle else None
        try:
            path = resolve_bundle_path(settings.artifacts_dir, request.bundle_id if request else None)
            # off the event loop: checksums and the ONNX session take a while, /recommend keeps serving
            bundle_id, previous = await asyncio.to_thread(ranker.reload, path)  # with an in-process retriever's part
        except BundleError as error:
            raise bundle_refused(error, serving) from error
        await asyncio.to_thread(ranker.prepare)  # requests meanwhile take the full encoding path
        return ReloadResponse(bundle_id=bundle_id, previous_bundle_id=previous)

    return router
