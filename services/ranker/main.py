"""Ranker app: `uvicorn services.ranker.main:create_app --factory --port 8000`.

Start-up (lifespan) opens the store, loads the track table, opens the retriever session (or, with
ENCORE_RANKER_RETRIEVAL=inprocess, starts the retriever's search in this process) and loads the current bundle;
nothing heavy happens at import time. A bundle that fails to load leaves the service up
but not ready (/readyz 503) until POST /admin/reload brings a good one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from encore.artifacts import BundleError, BundleHolder
from encore.settings import RankerSettings, RetrieverSettings
from encore.store import Store
from services.common.app import build_skeleton
from services.common.observability import RankerMetrics
from services.ranker.bundle import RankerModel, load_ranker_model, resolve_bundle_path
from services.ranker.pipeline import (
    ItemFeatures,
    Ranker,
    RecentActivity,
    Retrieve,
    RetrieveInProcess,
    StoreGuard,
    UserFeatures,
)
from services.ranker.room import add_room
from services.ranker.routes import build_router
from services.ranker.steer import Steer

SERVICE = "ranker"
log = logging.getLogger("encore.ranker")


def retrieval_step(settings: RankerSettings, store: Store) -> Retrieve | RetrieveInProcess:
    """The retriever service over HTTP, or its search in this process (ENCORE_RANKER_RETRIEVAL=inprocess), set by
    the same ENCORE_RETRIEVER_* variables as the service and loaded from the ranker's own bundles."""
    if settings.ranker_retrieval == "inprocess":
        return RetrieveInProcess(RetrieverSettings(artifacts_dir=settings.artifacts_dir), store)
    return Retrieve(settings.retriever_url, settings.retriever_timeout_s)


def create_app(settings: RankerSettings | None = None, store: Store | None = None) -> FastAPI:
    """The FastAPI app; `store` defaults to the one ENCORE_FEAST_* describes."""
    settings = settings or RankerSettings()
    logging.getLogger("encore").setLevel(settings.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        feature_store = store or Store(settings.store())
        holder: BundleHolder[RankerModel] = BundleHolder(
            lambda bundle: load_ranker_model(
                bundle, settings.onnx_threads, settings.cold_panel_weight, settings.ranker_precision
            ),
            expect_spec_hash=settings.expected_spec_hash or None,
        )
        guard = StoreGuard(feature_store)  # one view of "is the store down" for user and track reads
        ranker = Ranker(
            holder,
            UserFeatures(feature_store, settings.user_cache_ttl_s, settings.user_cache_size, guard),
            retrieval_step(settings, feature_store),
            ItemFeatures(
                feature_store,
                settings.track_table_max_age_s,
                settings.track_miss_ttl_s,
                guard,
                snapshot_dir=settings.track_snapshot_path(feature_store.settings.data_dir),
            ),
            n_candidates=settings.candidates,
            metrics=RankerMetrics.register(app.state.registry),
            recent=RecentActivity(feature_store, guard, settings.user_cache_size) if settings.read_events else None,
            foldin_candidates=settings.foldin_candidates,
            item_cache_dir=settings.item_cache_path,
            steer=Steer(settings.query_encoder_path, settings.ranker_query_weight, settings.onnx_threads),
        )
        ranker.load()
        try:
            ranker.reload(resolve_bundle_path(settings.artifacts_dir, None))
        except BundleError as error:  # /readyz stays 503 until a reload succeeds
            log.error("bundle refused: %s; still serving no bundle", error)
        app.state.store, app.state.ranker = feature_store, ranker
        # Item inputs encoded once; start-up objects (track table, sessions, Feast) then leave the GC's
        # generations: no full-collection pauses over them on the hot path (DESIGN section 3).
        ranker.prepare()
        try:
            yield
        finally:
            await ranker.close()

    app = FastAPI(
        title="Encore ranker",
        version="0.1.0",
        summary="Ranks retriever candidates with the bundle's CTR model (ONNX Runtime)",
        lifespan=lifespan,
    )
    app.state.registry = build_skeleton(
        app, SERVICE, settings, lambda: readiness(app), write_routes={("POST", "/admin/reload")}
    )
    app.include_router(build_router(settings))
    add_room(app)
    return app


def readiness(app: FastAPI) -> tuple[bool, dict]:
    """Ready when a bundle is loaded and the online store answers; reports the ONNX providers in use."""
    ranker: Ranker | None = getattr(app.state, "ranker", None)
    store: Store | None = getattr(app.state, "store", None)
    if ranker is None or store is None:
        return False, {"reason": "starting"}
    holder = ranker.holder
    store_ok = store.ping()
    details: dict = {
        "bundle_loaded": holder.loaded,
        "bundle_id": holder.bundle.id if holder.bundle else None,
        "model": holder.state.model_name if holder.loaded else None,
        "onnx_providers": holder.state.providers if holder.loaded else [],
        "ranker_precision": holder.state.precision if holder.loaded else None,  # the graph serving: fp32 or int8
        "feature_spec_hash": holder.state.spec.hash if holder.loaded else None,
        "store_reachable": store_ok,
        "retrieval": ranker.retrieve.mode,  # ENCORE_RANKER_RETRIEVAL: http or inprocess
        "tracks_in_table": len(ranker.item_features.table) if ranker.item_features.table is not None else 0,
        "query_encoder": ranker.steer is not None and ranker.steer.encoder is not None,
        "query_encoder_name": ranker.steer.encoder.name if ranker.steer and ranker.steer.encoder else None,
    }
    return holder.loaded and store_ok, details
