"""Retriever routes: candidates for a user, new tracks from the embedder, bundle reload."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from encore.artifacts import BundleError, current_bundle_path
from services.common.auth import ApiKey
from services.common.errors import ServiceError, bundle_refused, error_responses
from services.retriever.deps import KDep, LoadedRetrieverDep, MetricsDep, RetrieverDep, SettingsDep
from services.retriever.schemas import CandidatesResponse, ItemIn, ItemOut, ReloadRequest, ReloadResponse
from services.retriever.search import THREAD_MIN_ITEMS, CandidateList, ColdItemRefused

log = logging.getLogger(__name__)
router = APIRouter(tags=["retriever"])

UserIdQuery = Annotated[
    str, Query(min_length=1, max_length=256, description="User id as in the feature store", examples=["u0007"])
]


MAX_RECENT = 200  # ids per list: more than the ranker's recent window
RecentQuery = Annotated[
    list[str],
    Query(
        max_length=MAX_RECENT,
        description="Recent tracks (user_activity.recent_tracks, repeat the parameter): played ones feed a fold-in "
        "for a user the bundle does not know; excluded ones are left out of the answer",
    ),
]


# The search's own dataclasses serialized as CandidatesResponse's JSON (same fields, same order; a test checks the
# bytes): building and validating 200 CandidateOut models per request cost several times the serialization.
CANDIDATES_JSON = TypeAdapter(CandidateList)


@router.get(
    "/candidates",
    summary="Candidate tracks for a user, best first",
    response_model=CandidatesResponse,
    responses=error_responses(413, 422, 503),
)
async def get_candidates(
    user_id: UserIdQuery,
    k: KDep,
    retriever: LoadedRetrieverDep,
    metrics: MetricsDep,
    played: RecentQuery = [],  # noqa: B006 - FastAPI copies query defaults
    exclude: RecentQuery = [],  # noqa: B006
) -> Response:
    # On the event loop while the search is short in-memory numpy work: a plain `def` route cost two thread-pool
    # round trips per request (the route, then FastAPI's check of its return value). A large catalogue's exact
    # search takes milliseconds; in the pool (numpy's products release the GIL) the loop keeps answering meanwhile.
    if len(retriever.index.item_ids) >= THREAD_MIN_ITEMS:
        found = await run_in_threadpool(retriever.candidates, user_id, k, played, exclude)
    else:
        found = retriever.candidates(user_id, k, played, exclude)
    metrics.candidates.labels(found.source).inc()
    return Response(CANDIDATES_JSON.dump_json(found), media_type="application/json")


@router.post(
    "/items",
    summary="Make a new track retrievable now, through its content vector",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 413, 422, 503),
)
def add_item(item: ItemIn, retriever: LoadedRetrieverDep, metrics: MetricsDep, settings: SettingsDep) -> ItemOut:
    bound = settings.retriever_max_abs_content
    if (bad := item.beyond(bound)) is not None:
        metrics.items.labels("refused").inc()
        message = f"embedding.{bad}: beyond the content bound {bound:g} (ENCORE_RETRIEVER_MAX_ABS_CONTENT)"
        raise ServiceError(422, "invalid_request", message)
    try:
        added = retriever.add_item(item.track_id, item.embedding, item.encoder, item.encoder_revision)
    except ColdItemRefused as refused:
        metrics.items.labels("refused").inc()
        raise ServiceError(422, "item_refused", str(refused)) from refused
    metrics.items.labels(added).inc()
    index = retriever.index
    return ItemOut(track_id=item.track_id, status=added, bundle_id=index.bundle_id, cold_items=len(index.cold))


@router.post(
    "/admin/reload",
    summary="Load a bundle (default: artifacts/CURRENT); a bad one is refused and the old one keeps serving",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 413, 422),
)
def reload_bundle(
    retriever: RetrieverDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    request: Annotated[ReloadRequest | None, Body()] = None,
) -> ReloadResponse:
    previous = retriever.holder.bundle.id if retriever.holder.bundle else None
    bundle_id = request.bundle_id if request else None
    try:
        path = Path(settings.artifacts_dir) / bundle_id if bundle_id else current_bundle_path(settings.artifacts_dir)
        bundle = retriever.reload(path)
    except BundleError as error:
        metrics.reloads.labels("refused").inc()
        raise bundle_refused(error, previous) from error
    metrics.reloads.labels("loaded").inc()
    index = retriever.index
    log.info("bundle %s loaded (was %s)", bundle.id, previous)
    return ReloadResponse(
        bundle_id=bundle.id,
        previous_bundle_id=previous,
        n_users=len(index.user_index),
        n_items=len(index.item_ids),
        cold_items=len(index.cold),
    )
