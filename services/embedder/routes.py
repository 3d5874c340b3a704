"""HTTP routes of the embedder: upload and embed (reading the upload within its size limit), read a stored track,
reload the bundle."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from functools import partial
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Body, Form, Path, UploadFile
from starlette.concurrency import run_in_threadpool

from encore import feature_names as fn
from encore.artifacts import BundleError
from encore.audio.encoder import parse_tags
from encore.settings import EmbedderSettings
from encore.store import Store
from services.common.auth import ApiKey
from services.common.errors import bundle_refused
from services.common.middleware import BodyLimit
from services.common.patterns import TRACK_ID_PATTERN
from services.embedder.deps import Runtime, RuntimeDep, SettingsDep, StateDep, StoreDep
from services.embedder.encode import (
    EmbedderState,
    Embedding,
    EmbedError,
    bundle_dir,
    embed_audio,
    new_track_id,
    read_track,
    track_meta,
    write_track,
)
from services.embedder.schemas import (
    EmbedForm,
    EmbedResponse,
    ReloadRequest,
    ReloadResponse,
    TrackResponse,
    error_responses,
)

router = APIRouter()
T = TypeVar("T")


@router.post(
    "/embed",
    summary="Upload audio; store its embedding, tokens and metadata; make the track live",
    dependencies=[ApiKey],
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 503),
)
async def embed(
    form: Annotated[EmbedForm, Form(media_type="multipart/form-data")],
    runtime: RuntimeDep,
    state: StateDep,
    settings: SettingsDep,
    store: StoreDep,
) -> EmbedResponse:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = await _timed(timings, "read", read_upload(form.file, settings.max_upload_bytes))
    work = partial(embed_audio, data, state, max_seconds=settings.max_audio_seconds)
    result = await anyio.to_thread.run_sync(work, limiter=runtime.cpu_limiter)
    timings |= {"decode": result.decode_ms, "encode": result.encode_ms}
    track_id = form.track_id or new_track_id()
    overwritten = await _timed(timings, "store", _write(runtime, store, track_id, form, result, state))
    if runtime.audio is not None:  # kept for playback (GET /tracks/{id}/audio); the track is stored already
        await run_in_threadpool(runtime.audio.keep, track_id, data, form.file.filename)
    embedding = result.embedding.tolist()
    notice = runtime.notifier.notify(track_id, embedding, state.encoder.name, state.content_revision)
    notified = await _timed(timings, "notify", notice)
    runtime.metrics.uploads.labels("ok").inc()
    for stage, ms in timings.items():
        runtime.metrics.stage_seconds.labels(stage).observe(ms / 1000)
    for part, ms in result.encode_parts_ms.items():  # within "encode": MusiCNN's resample, mel and network
        runtime.metrics.stage_seconds.labels(f"encode_{part}").observe(ms / 1000)
    return _embed_response(track_id, state, result, embedding, overwritten, notified, started, timings, settings)


@router.get(
    "/tracks/{track_id}",
    summary="Stored content features and metadata of one track",
    responses=error_responses(404, 422, 503),
)
async def get_track(
    track_id: Annotated[str, Path(pattern=TRACK_ID_PATTERN, examples=["upload:8f3a9c"])], store: StoreDep
) -> TrackResponse:
    row = await run_in_threadpool(read_track, store, track_id)
    content = {name: row.get(name) for name in fn.TRACK_CONTENT_FIELDS}
    content["tags"] = parse_tags(content["tags"])
    meta = {name: value for name, value in row.items() if name not in content}
    return TrackResponse(track_id=track_id, meta=meta, **content)


@router.post(
    "/admin/reload",
    summary="Load artifacts/CURRENT (or the given bundle) and swap it in; a refused bundle leaves the old one",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 413, 422, 503),
    tags=["admin"],
)
async def reload_bundle(runtime: RuntimeDep, body: Annotated[ReloadRequest | None, Body()] = None) -> ReloadResponse:
    if runtime.encoder is None:
        raise EmbedError("encoder_unavailable", runtime.encoder_error or "no encoder")
    previous = runtime.holder.bundle.id if runtime.holder.bundle else None
    try:
        path = bundle_dir(runtime.settings.artifacts_dir, body.bundle_id if body else None)
        bundle = await run_in_threadpool(runtime.holder.reload, path)
    except BundleError as exc:
        raise bundle_refused(exc, previous) from exc
    state = runtime.holder.state
    return ReloadResponse(
        bundle_id=bundle.id,
        previous_bundle_id=previous,
        encoder=state.encoder.name,
        encoder_revision=state.content_revision,
    )


# --- the upload's size, enforced while the body streams in, before a whole oversized file is held anywhere ----
# Two layers: the shared `RequestGuard` (services/common/middleware.py) checks the key from the headers, caps
# uploads in flight and caps the raw body of POST /embed at the file limit plus multipart overhead (413 at once
# on a larger Content-Length, a chunked stream cut off as it passes the cap), with the `upload_limit` the app
# gives it; `read_upload` reads the parsed file part in chunks and stops at the exact file limit.

READ_CHUNK = 1 << 20


def too_large_message(limit_bytes: int) -> str:
    return f"the upload is larger than the limit of {limit_bytes / 2**20:.2f} MiB (ENCORE_EMBEDDER_MAX_UPLOAD_MB)"


def upload_limit(settings: EmbedderSettings) -> BodyLimit:
    """POST /embed's body cap and its cap on uploads held at once (each may hold up to the file limit)."""
    message = too_large_message(settings.max_upload_bytes)
    return BodyLimit(settings.max_body_bytes, message, max_in_flight=settings.max_uploads_in_flight)


async def read_upload(file: UploadFile, limit_bytes: int) -> bytes:
    """The file's bytes, read in chunks; EmbedError too_large as soon as they pass `limit_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await file.read(READ_CHUNK):
        size += len(chunk)
        if size > limit_bytes:
            raise EmbedError("too_large", too_large_message(limit_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


async def _timed(timings: dict[str, float], stage: str, step: Awaitable[T]) -> T:
    start = time.perf_counter()
    result = await step
    timings[stage] = (time.perf_counter() - start) * 1000
    return result


async def _write(
    runtime: Runtime, store: Store, track_id: str, form: EmbedForm, result: Embedding, state: EmbedderState
) -> bool:
    """Check-then-write under the process's write lock and the store's cross-process lock for this track id
    (several embedder workers must not both find an id free and both write it); blocking calls in a thread."""
    write: Callable[[], bool] = partial(
        write_track, store, track_id, track_meta(form.meta()), result, state, overwrite=form.overwrite
    )

    def locked_write() -> bool:
        with ExitStack() as stack:
            try:
                stack.enter_context(store.write_lock(f"track:{track_id}"))
            except Exception as exc:  # Redis down, or the lock never freed: the store is not usable now
                message = f"could not lock track {track_id!r} in the store ({type(exc).__name__})"
                raise EmbedError("store_unavailable", message) from exc
            return write()

    async with runtime.write_lock:
        return await run_in_threadpool(locked_write)


def _embed_response(
    track_id: str,
    state: EmbedderState,
    result: Embedding,
    embedding: list[float],
    overwritten: bool,
    notified: bool,
    started: float,
    timings: dict[str, float],
    settings: EmbedderSettings,
) -> EmbedResponse:
    note = None
    if result.truncated:
        note = (
            f"only the first {result.seconds_used:.1f} s of {result.duration_seconds:.1f} s were encoded "
            f"(ENCORE_EMBEDDER_MAX_AUDIO_SECONDS={settings.max_audio_seconds:g})"
        )
    return EmbedResponse(
        track_id=track_id,
        bundle_id=state.bundle_id,
        encoder=state.encoder.name,
        encoder_revision=state.content_revision,
        n_layers=state.codebooks.n_layers,
        layer_widths=list(state.codebooks.layout.widths),
        dim=len(embedding),
        n_tokens=len(result.tokens),
        embedding=embedding,
        tokens=result.tokens.tolist(),
        typicality=round(result.typicality, 4),
        tags=result.tags,
        seconds_used=round(result.seconds_used, 3),
        duration_seconds=round(result.duration_seconds, 3),
        truncated=result.truncated,
        note=note,
        overwritten=overwritten,
        retriever_notified=notified,
        processing_ms=round((time.perf_counter() - started) * 1000, 2),
        timings_ms={stage: round(ms, 2) for stage, ms in timings.items()},
    )
