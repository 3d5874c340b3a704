"""The listening room: the page at / (static files in services/ranker/static, nothing from a CDN) and the read
calls it makes through the ranker (demo users, history, nearest catalog tracks; answered by the retriever).

Uploads, audio and events go from the page straight to the embedder, allowed there by CORS for the ranker's
origin (ENCORE_EMBEDDER_CORS_ORIGINS): upload bodies and audio streams then never pass through the ranker's hot path,
and the embedder's own limits and key check apply unchanged (docs/listening_room.md).

With ENCORE_RANKER_RETRIEVAL=inprocess the read calls are answered by the retriever's own catalog functions
(services/retriever/catalog.py) over the ranker's in-process retriever, with no retriever service to ask.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import aiohttp
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from encore.audio.encoder import parse_tags
from encore.settings import RankerSettings
from services.common.errors import COMMON_STATUS, ServiceError, error_responses
from services.common.patterns import TRACK_ID_PATTERN
from services.ranker.pipeline import Ranker, RetrieveInProcess
from services.retriever import catalog
from services.retriever.search import Retriever

STATIC_DIR = Path(__file__).parent / "static"
router = APIRouter(prefix="/ui", tags=["page"])
CODES = COMMON_STATUS | {"retriever_unavailable": 503}
UserId = Annotated[str, Query(min_length=1, max_length=256)]


def add_room(app: FastAPI) -> None:
    """Mount the page (/ and /static) and its /ui/* read routes."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.include_router(router)


def _in_process(request: Request) -> Retriever | None:
    """The ranker's own retriever under ENCORE_RANKER_RETRIEVAL=inprocess; None: ask the retriever service."""
    retrieve = request.app.state.ranker.retrieve
    if not isinstance(retrieve, RetrieveInProcess):
        return None
    if not retrieve.retriever.loaded:
        raise ServiceError(503, "retriever_unavailable", "the in-process retriever has no bundle loaded yet")
    return retrieve.retriever


async def _from_retriever(request: Request, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """GET the retriever over the ranker's pooled session; its 404/422 pass through, any other failure is a 503."""
    settings: RankerSettings = request.app.state.settings
    session = request.app.state.ranker.retrieve.session
    url = settings.retriever_url.rstrip("/") + path
    try:
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=2.0)) as response:
            body = await response.json(content_type=None)
    except Exception as error:
        message = f"the retriever did not answer ({type(error).__name__})"
        raise ServiceError(503, "retriever_unavailable", message) from error
    if response.status < 400:
        return body
    detail = body.get("detail") if isinstance(body, dict) else None
    if response.status in (404, 422) and isinstance(detail, dict) and "code" in detail:
        raise ServiceError(response.status, str(detail["code"]), str(detail.get("message", "")))
    raise ServiceError(503, "retriever_unavailable", f"the retriever answered HTTP {response.status}")


@router.get("/config", summary="What the page needs to know: the embedder's address, k limits, the bundle")
def config(request: Request) -> dict[str, Any]:
    settings: RankerSettings = request.app.state.settings
    ranker: Ranker = request.app.state.ranker
    bundle = ranker.holder.bundle
    return {
        "embedder_url": settings.ranker_embedder_url,  # "" -> the page uses its own host, port 8002
        "default_k": settings.default_k,
        "max_k": settings.max_k,
        "bundle_id": bundle.id if bundle else None,
    }


@router.get("/users", summary="Demo users (the bundle's first users)", responses=error_responses(503, codes=CODES))
async def users(request: Request) -> dict[str, Any]:
    if (retriever := _in_process(request)) is not None:
        return (await asyncio.to_thread(catalog.users, retriever, 8)).model_dump()
    return await _from_retriever(request, "/users", {"limit": 8})


@router.get(
    "/history", summary="A user's played tracks with genre and tags", responses=error_responses(422, 503, codes=CODES)
)
async def history(request: Request, user_id: UserId) -> dict[str, Any]:
    if (retriever := _in_process(request)) is not None:
        found = (await asyncio.to_thread(catalog.history, user_id, retriever, 30)).model_dump()
    else:
        found = await _from_retriever(request, f"/users/{quote(user_id, safe='')}/history", {"k": 30})
    ids = found["track_ids"]
    items, _ = await request.app.state.ranker.item_features(ids) if ids else (None, None)
    tracks = [
        {"track_id": t, "genre": items.value("genre", i), "tags": parse_tags(items.value("tags", i)).get("mtt", [])}
        for i, t in enumerate(ids)
    ]
    return {"user_id": user_id, "known_user": found["known_user"], "tracks": tracks}


@router.get(
    "/similar",
    summary="Nearest catalog tracks of a track or upload",
    responses=error_responses(404, 422, 503, codes=CODES),
)
async def similar(request: Request, track_id: Annotated[str, Query(pattern=TRACK_ID_PATTERN)]) -> dict[str, Any]:
    if (retriever := _in_process(request)) is not None:
        return (await asyncio.to_thread(catalog.similar, track_id, retriever, 5)).model_dump()
    return await _from_retriever(request, f"/items/{track_id}/similar", {"k": 5})
