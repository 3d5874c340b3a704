"""HTTP routes of the ranker: GET /recommend and the authenticated POST /admin/reload (thin handlers)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query

from encore.artifacts import BundleError
from encore.settings import RankerSettings
from services.common.auth import ApiKey
from services.common.errors import bundle_refused, error_responses
from services.ranker.bundle import reload_bundle, resolve_bundle_path
from services.ranker.deps import get_k, get_ranker, get_serving_ranker
from services.ranker.pipeline import Ranker
from services.ranker.schemas import RecommendedTrack, RecommendResponse, ReloadRequest, ReloadResponse


def build_router(settings: RankerSettings) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/recommend",
        response_model=RecommendResponse,
        tags=["ranker"],
        summary="Ranked tracks for a user: retrieve, add features, score with the CTR model, order",
        responses=error_responses(413, 422, 503),
    )
    async def recommend(
        user_id: Annotated[
            str, Query(min_length=1, max_length=256, description="User id (unknown users still get an answer)")
        ],
        k: Annotated[int, Depends(get_k)],
        ranker: Annotated[Ranker, Depends(get_serving_ranker)],
    ) -> RecommendResponse:
        result = await ranker.recommend(user_id, k)
        return RecommendResponse(
            user_id=result.user_id,
            bundle_id=result.bundle_id,
            model=result.model,
            degraded=bool(result.degraded_reasons),
            degraded_reason="; ".join(result.degraded_reasons) or None,
            candidate_source=result.candidate_source,
            items=[RecommendedTrack(**item.__dict__) for item in result.items],
        )

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
            bundle_id, previous = await asyncio.to_thread(reload_bundle, ranker.holder, path)
        except BundleError as error:
            raise bundle_refused(error, serving) from error
        await asyncio.to_thread(ranker.prepare)  # requests meanwhile take the full encoding path
        return ReloadResponse(bundle_id=bundle_id, previous_bundle_id=previous)

    return router
