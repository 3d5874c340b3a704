"""Retriever routes the listening room needs: demo users, a user's history, a track's nearest catalog tracks,
and forgetting an upload (the embedder's DELETE /tracks/{id} calls it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from services.common.auth import ApiKey
from services.common.errors import COMMON_STATUS, ServiceError, error_responses
from services.common.patterns import TRACK_ID_PATTERN
from services.retriever.deps import LoadedRetrieverDep
from services.retriever.search import ColdItemRefused

router = APIRouter(tags=["catalog"])
TrackId = Annotated[str, Path(pattern=TRACK_ID_PATTERN, examples=["upload:8f3a9c"])]
Count = Annotated[int, Query(ge=1, le=500, description="How many")]


class UsersOut(BaseModel):
    bundle_id: str
    users: list[str] = Field(description="User ids the bundle has vectors for, in bundle order")
    n_users: int = Field(description="All users of the bundle")


class HistoryOut(BaseModel):
    user_id: str
    known_user: bool = Field(description="False when the bundle has no such user (then no history)")
    track_ids: list[str] = Field(description="Tracks the user played in the bundle's training data")


class SimilarTrack(BaseModel):
    track_id: str
    score: float = Field(description="Cosine similarity in the recall space (1 = same direction)")


class SimilarOut(BaseModel):
    track_id: str
    cold: bool = Field(description="True for an upload (its projected content vector was compared)")
    similar: list[SimilarTrack] = Field(description="Nearest catalog tracks, best first")


class RemovedOut(BaseModel):
    track_id: str
    removed: bool = Field(description="False when the retriever did not hold the track (nothing to do)")


@router.get("/users", summary="Some user ids of the bundle, for a demo", responses=error_responses(422, 503))
def users(retriever: LoadedRetrieverDep, limit: Count = 8) -> UsersOut:
    index = retriever.index
    ids = sorted(index.user_index, key=lambda u: (len(u), u))[:limit]  # "0".."7" rather than "0", "1", "10"
    return UsersOut(bundle_id=index.bundle_id, users=ids, n_users=len(index.user_index))


@router.get(
    "/users/{user_id}/history", summary="What the user played (training data)", responses=error_responses(422, 503)
)
def history(
    user_id: Annotated[str, Path(min_length=1, max_length=256)], retriever: LoadedRetrieverDep, k: Count = 50
) -> HistoryOut:
    played = retriever.history(user_id)
    return HistoryOut(user_id=user_id, known_user=played is not None, track_ids=(played or [])[:k])


@router.get(
    "/items/{track_id}/similar",
    summary="The catalog tracks nearest a track or an upload",
    responses=error_responses(404, 422, 503),
)
def similar(track_id: TrackId, retriever: LoadedRetrieverDep, k: Count = 5) -> SimilarOut:
    try:
        found = retriever.similar(track_id, k)
    except KeyError:
        raise ServiceError(404, "not_found", f"the retriever holds no track {track_id!r}") from None
    cold = track_id not in retriever.index.item_index
    return SimilarOut(track_id=track_id, cold=cold, similar=[SimilarTrack(track_id=t, score=s) for t, s in found])


@router.delete(
    "/items/{track_id}",
    summary="Forget an upload (catalog tracks of the bundle are refused: 409 in_bundle)",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 409, 422, 503, codes=COMMON_STATUS | {"in_bundle": 409}),
)
def remove(track_id: TrackId, retriever: LoadedRetrieverDep) -> RemovedOut:
    try:
        return RemovedOut(track_id=track_id, removed=retriever.remove_item(track_id))
    except ColdItemRefused as refused:
        raise ServiceError(409, "in_bundle", str(refused)) from refused
