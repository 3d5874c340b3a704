"""Listening routes of the embedder: a track's audio (with HTTP Range), signed links to it, and deleting a track.

Uploaded audio is not public: GET /tracks/{id}/audio needs the X-API-Key header or a signed link from
POST /tracks/{id}/audio-link (HMAC over the track id and the expiry, keyed with the API key). Catalog tracks
of the synthetic demo world play from the files the bootstrap rendered (the bundle's manifest names the world).
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path as FilePath
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from services.common.auth import API_KEY_HEADER, ApiKey, api_key_problem
from services.common.errors import COMMON_STATUS, ServiceError, error_responses
from services.common.patterns import TRACK_ID_PATTERN
from services.embedder.audio_store import media_type_of, sign, signature_ok
from services.embedder.deps import Runtime, RuntimeDep, StoreDep

router = APIRouter(tags=["listen"])
TrackId = Annotated[str, Path(pattern=TRACK_ID_PATTERN, examples=["upload:8f3a9c"])]
CODES = COMMON_STATUS | {
    "range_not_satisfiable": 416,
    "in_bundle": 409,
    "retriever_unavailable": 503,
    "store_unavailable": 503,
}


class AudioLink(BaseModel):
    url: str = Field(description="Path of the audio with its signature; GET it without a key until `expires`")
    expires: int = Field(description="Unix time (s) after which the link no longer opens the audio")


class Deleted(BaseModel):
    track_id: str
    store_rows: bool = Field(description="The store held rows of the track (now removed, online and offline)")
    audio: bool = Field(description="Kept audio was removed")
    retriever: str = Field(description="'removed', or 'absent' when the retriever held no entry")


@lru_cache(maxsize=4)
def _world_audio(world: FilePath) -> dict[str, FilePath]:
    """track id -> rendered file of a synthetic world (its tracks.parquet), {} when there is none."""
    try:
        tracks = pd.read_parquet(world / "tracks.parquet", columns=["track_id", "audio_file"])
    except (FileNotFoundError, KeyError, ValueError):
        return {}
    return {str(t): world / f for t, f in zip(tracks.track_id, tracks.audio_file, strict=True)}


def find_audio(runtime: Runtime, track_id: str) -> tuple[FilePath, str] | None:
    """(file, media type) of a kept upload, else of the demo world's rendered track; None when neither."""
    if runtime.audio is not None and (kept := runtime.audio.find(track_id)) is not None:
        return kept.path, kept.media_type
    bundle = runtime.holder.bundle
    world = (bundle.manifest.get("dataset") or {}).get("world") if bundle else None
    rendered = _world_audio(runtime.settings.cache_dir / "synthetic" / world).get(track_id) if world else None
    if rendered is None or not rendered.is_file():
        return None
    return rendered, media_type_of(rendered.read_bytes()[:4], rendered.name)


def _check_range(header: str | None, size: int) -> None:
    """Refuse a bad Range in the one error shape (Starlette would answer plain text)."""
    if header is None:
        return
    try:
        FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader:
        raise ServiceError(400, "bad_request", "malformed Range header (expected bytes=start-end)") from None
    except RangeNotSatisfiable:
        headers = {"Content-Range": f"bytes */{size}"}
        raise ServiceError(416, "range_not_satisfiable", f"the audio has {size} bytes", headers=headers) from None


@router.get(
    "/tracks/{track_id}/audio",
    summary="The track's audio (HTTP Range supported); needs X-API-Key or a signed link's expires + sig",
    response_class=FileResponse,
    responses={200: {"content": {"audio/*": {}}}, 206: {"description": "Partial content"}}
    | error_responses(400, 401, 403, 404, 416, 422, codes=CODES),
)
async def audio(
    track_id: TrackId,
    runtime: RuntimeDep,
    request: Request,
    expires: Annotated[int | None, Query(description="From a signed link")] = None,
    sig: Annotated[str | None, Query(max_length=128, description="From a signed link")] = None,
    x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None,
) -> FileResponse:
    key = runtime.settings.api_key.get_secret_value()
    if expires is None or sig is None or not signature_ok(key, track_id, expires, sig):
        if (problem := api_key_problem(x_api_key, key)) is not None:
            problem.message += " (or a valid signed link: POST /tracks/{id}/audio-link)"
            raise problem
    found = await run_in_threadpool(find_audio, runtime, track_id)
    if found is None:
        raise ServiceError(404, "not_found", f"no audio kept for track {track_id!r}")
    path, media_type = found
    _check_range(request.headers.get("range"), path.stat().st_size)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})


@router.post(
    "/tracks/{track_id}/audio-link",
    summary="A short-lived signed link to the track's audio, for players that cannot send the key",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 404, 422, codes=CODES),
)
async def audio_link(track_id: TrackId, runtime: RuntimeDep) -> AudioLink:
    if await run_in_threadpool(find_audio, runtime, track_id) is None:
        raise ServiceError(404, "not_found", f"no audio kept for track {track_id!r}")
    expires = int(time.time()) + runtime.settings.embedder_audio_link_ttl_s
    signature = sign(runtime.settings.api_key.get_secret_value(), track_id, expires)
    return AudioLink(url=f"/tracks/{track_id}/audio?expires={expires}&sig={signature}", expires=expires)


@router.delete(
    "/tracks/{track_id}",
    summary="Delete an upload: its store rows (online and offline), its audio and its retriever entry",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 404, 409, 422, 503, codes=CODES),
)
async def delete_track(track_id: TrackId, runtime: RuntimeDep, store: StoreDep) -> Deleted:
    # The retriever first: it refuses catalog tracks (409) before anything is removed, and it must not keep
    # serving an id whose rows are gone. Once more at the end, in case its store pick-up re-read the track.
    retriever = await runtime.notifier.forget(track_id)
    if retriever == "in_bundle":
        raise ServiceError(409, "in_bundle", f"track {track_id!r} is a catalog track of the bundle, not an upload")
    if retriever == "unreachable" and runtime.notifier.enabled:
        raise ServiceError(503, "retriever_unavailable", "the retriever did not confirm; nothing was deleted")
    try:
        async with runtime.write_lock:
            rows = await run_in_threadpool(store.delete_track, track_id)
    except Exception as exc:  # Redis down, SQLite locked: the retriever entry is gone, the rows are not
        message = f"the store could not delete the track ({type(exc).__name__}); retry the DELETE"
        raise ServiceError(503, "store_unavailable", message) from exc
    audio = await run_in_threadpool(runtime.audio.forget, track_id) if runtime.audio is not None else False
    if not rows and not audio and retriever != "removed":
        raise ServiceError(404, "not_found", f"no track {track_id!r}")
    if runtime.notifier.enabled:
        await runtime.notifier.forget(track_id)
    return Deleted(track_id=track_id, store_rows=rows, audio=audio, retriever=retriever)
