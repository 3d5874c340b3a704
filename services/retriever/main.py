"""Retriever app factory: `uvicorn services.retriever.main:create_app --factory --port 8001`.

Start-up loads artifacts/CURRENT (a missing or bad bundle leaves the service up but not ready) and starts
the pick-up of tracks pushed to the store since the bundle was built; nothing runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from encore.artifacts import BundleError
from encore.settings import RetrieverSettings
from encore.store import Store
from services.common.app import build_skeleton
from services.common.observability import RetrieverMetrics
from services.retriever.catalog import router as catalog_router
from services.retriever.routes import router
from services.retriever.search import Retriever
from services.retriever.state import load_current, pick_up_loop, search_options, search_threads

log = logging.getLogger(__name__)
SERVICE = "retriever"


async def _load_current(app: FastAPI) -> None:
    try:
        await asyncio.to_thread(load_current, app.state.retriever, app.state.settings.artifacts_dir)
        app.state.metrics.reloads.labels("loaded").inc()
    except BundleError as error:
        app.state.metrics.reloads.labels("refused").inc()
        log.error("retriever started without a bundle (not ready until POST /admin/reload succeeds): %s", error)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: RetrieverSettings = app.state.settings
    with search_threads(settings):
        await _load_current(app)
        gc.freeze()  # long-lived arrays and dicts leave the GC's generations: no p99 spikes from full collections
        picked_up = app.state.metrics.items.labels("picked_up").inc
        task = asyncio.create_task(
            pick_up_loop(app.state.retriever, app.state.store, settings.retriever_refresh_s, picked_up)
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _readiness(app: FastAPI) -> tuple[bool, dict]:
    retriever: Retriever = app.state.retriever
    store_ok = app.state.store.ping()
    details: dict = {"bundle_id": None, "store": store_ok}
    if retriever.loaded:
        index = retriever.index
        details.update(bundle_id=index.bundle_id, n_users=len(index.user_index), n_items=len(index.item_ids))
        details.update(model=index.model, index="ivf" if index.ivf is not None else "exact")
        if index.ivf is not None:
            details.update(ivf_nprobe=int(index.ivf.nprobe), ivf_sampled_recall=index.ivf_recall)
        details["cold_items"] = len(index.cold)
    return retriever.loaded and store_ok, details


def create_app(settings: RetrieverSettings | None = None, store: Store | None = None) -> FastAPI:
    settings = settings or RetrieverSettings()
    app = FastAPI(
        title="Encore retriever",
        version="0.1.0",
        summary="Candidate tracks per user: recall-model vectors, exact or IVF top-k, cold tracks by their content",
        lifespan=_lifespan,
    )
    app.state.store = store or Store(settings.store())
    app.state.retriever = retriever = Retriever(search_options(settings))
    write_routes = {("POST", "/admin/reload"), ("POST", "/items"), ("DELETE", "/items/{track_id}")}
    registry = build_skeleton(app, SERVICE, settings, lambda: _readiness(app), write_routes=write_routes)

    def cold_items() -> int:  # read at every scrape
        return len(retriever.index.cold) if retriever.loaded else 0

    app.state.metrics = RetrieverMetrics.register(registry, cold_items)
    app.include_router(router)
    app.include_router(catalog_router)
    return app


def main() -> None:
    import uvicorn

    settings = RetrieverSettings()
    from services.common.server import GuardedHttpToolsProtocol

    uvicorn.run(
        create_app(settings),
        host="0.0.0.0",
        port=settings.retriever_port,
        log_level=settings.log_level,
        http=GuardedHttpToolsProtocol,  # read deadlines and the connection cap (docs/security.md)
        timeout_keep_alive=settings.keep_alive_s,
    )


if __name__ == "__main__":
    main()
