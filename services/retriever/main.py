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
from threadpoolctl import threadpool_limits

from encore.artifacts import BundleError, current_bundle_path
from encore.settings import RetrieverSettings
from encore.store import Store
from services.common.app import build_skeleton
from services.common.observability import RetrieverMetrics
from services.retriever.catalog import router as catalog_router
from services.retriever.routes import router
from services.retriever.search import Retriever, SearchOptions

log = logging.getLogger(__name__)
SERVICE = "retriever"


async def _load_current(app: FastAPI) -> None:
    settings: RetrieverSettings = app.state.settings
    try:
        bundle = await asyncio.to_thread(app.state.retriever.reload, current_bundle_path(settings.artifacts_dir))
        app.state.metrics.reloads.labels("loaded").inc()
        log.info("retriever serving bundle %s", bundle.id)
    except BundleError as error:
        app.state.metrics.reloads.labels("refused").inc()
        log.error("retriever started without a bundle (not ready until POST /admin/reload succeeds): %s", error)


async def _pick_up_loop(app: FastAPI) -> None:
    """Make tracks pushed to the store since the bundle was built retrievable: now, then every interval."""
    retriever: Retriever = app.state.retriever
    interval = app.state.settings.retriever_refresh_s
    while True:
        if retriever.loaded:
            try:
                added = await asyncio.to_thread(retriever.pick_up, app.state.store)
                if added:
                    log.info("picked up %d new tracks from the store", added)
                    app.state.metrics.items.labels("picked_up").inc(added)
            except Exception:  # the store may be down for a while; keep serving and try again later
                log.exception("pick-up of new tracks from the store failed")
        if interval <= 0:
            return
        await asyncio.sleep(interval)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: RetrieverSettings = app.state.settings
    blas = threadpool_limits(limits=settings.retriever_blas_threads, user_api="blas")
    if settings.retriever_index != "exact":
        import faiss

        faiss.omp_set_num_threads(settings.retriever_blas_threads)  # one query at a time: threads only spin
    await _load_current(app)
    gc.freeze()  # long-lived arrays and dicts leave the GC's generations: no p99 spikes from full collections
    task = asyncio.create_task(_pick_up_loop(app))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        blas.restore_original_limits()


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


def search_options(settings: RetrieverSettings) -> SearchOptions:
    return SearchOptions(
        index=settings.retriever_index,
        ivf_min_items=settings.retriever_ivf_min_items,
        ivf_nlist=settings.retriever_ivf_nlist,
        ivf_nprobe=settings.retriever_ivf_nprobe,
        ivf_target_recall=settings.retriever_ivf_target_recall,
        model=settings.retriever_model,
        cold_share=settings.retriever_cold_share,
        foldin_prior=settings.retriever_foldin_prior,
    )


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
