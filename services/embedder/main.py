"""The embedder service (:8002): audio upload -> embedding + tokens -> feature store, live at once.

Run: uvicorn services.embedder.main:create_app --factory --port 8002
Nothing happens at import time; create_app() wires the app and its lifespan loads the encoder, the
bundle's codebooks and the store. Error codes and their HTTP statuses: services/embedder/encode.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from encore.artifacts import BundleError, BundleHolder, current_bundle_path
from encore.audio import AudioError, EncoderUnavailable, get_encoder
from encore.onnx_scorer import encoder_providers
from encore.settings import EmbedderSettings
from encore.store import Store
from services.common.app import build_skeleton
from services.common.errors import error_response, validation_message
from services.common.observability import EmbedderMetrics
from services.embedder.audio_store import AudioStore
from services.embedder.deps import Runtime
from services.embedder.encode import ERROR_STATUS, EmbedderState, EmbedError, build_state
from services.embedder.events_routes import EventService, refusal_from_validation
from services.embedder.events_routes import router as events_router
from services.embedder.listen import router as listen_router
from services.embedder.retriever import RetrieverNotifier
from services.embedder.routes import router, upload_limit

log = logging.getLogger("encore.embedder")
SERVICE = "embedder"
WRITE_ROUTES = {
    ("POST", "/embed"),
    ("POST", "/admin/reload"),
    ("POST", "/events"),
    ("DELETE", "/users/{user_id}/events"),
    ("DELETE", "/tracks/{track_id}"),
    ("POST", "/tracks/{track_id}/audio-link"),
}


def create_app(settings: EmbedderSettings | None = None, *, store: Store | None = None) -> FastAPI:
    """The embedder app; `store` defaults to the one ENCORE_FEAST_* configures (tests pass their own)."""
    settings = settings or EmbedderSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await _start(settings, store or Store(settings.store()), metrics)
        app.state.runtime = runtime
        app.state.events = await run_in_threadpool(EventService, runtime.store, settings)
        try:
            yield
        finally:
            await runtime.notifier.aclose()
            app.state.events.log.close()

    app = FastAPI(
        title="Encore embedder",
        version="1",
        summary="Audio upload -> content embedding + audio tokens in the feature store",
        lifespan=lifespan,
    )
    registry = build_skeleton(
        app,
        SERVICE,
        settings,
        lambda: _readiness(app),
        write_routes=WRITE_ROUTES,
        route_limits={"/embed": upload_limit(settings)},
        coded={AudioError: ERROR_STATUS, EmbedError: ERROR_STATUS},
        on_error=_count_upload_error,
    )
    metrics = EmbedderMetrics.register(registry)
    app.include_router(router)
    app.include_router(events_router)
    app.include_router(listen_router)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    # Outermost, so refusals (401, 413, 503) carry the headers too and the page can show their message.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.embedder_cors_origins.split(",") if o.strip()],
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["X-API-Key", "Content-Type", "Range"],
        expose_headers=["Content-Range", "Content-Length", "Accept-Ranges"],
        max_age=600,
    )
    return app


async def _start(settings: EmbedderSettings, store: Store, metrics: EmbedderMetrics) -> Runtime:
    encoder, encoder_error = None, None
    try:
        encoder = get_encoder(
            settings.encoder, settings.weights_dir, settings.encoder_runtime, settings.encoder_threads
        )
    except EncoderUnavailable as exc:
        encoder_error = str(exc)
        log.error("encoder unavailable: %s", exc)
    holder: BundleHolder[EmbedderState] = BundleHolder(lambda bundle: build_state(bundle, encoder))
    if encoder is not None:
        try:
            await run_in_threadpool(holder.reload, current_bundle_path(settings.artifacts_dir))
        except BundleError as exc:  # serve unready; POST /admin/reload once a good bundle is there
            log.error("no bundle loaded: %s", exc)
    await run_in_threadpool(lambda: store.feast)  # import feast and open the store now, not on the first upload
    return Runtime(
        settings=settings,
        store=store,
        holder=holder,
        encoder=encoder,
        encoder_error=encoder_error,
        notifier=RetrieverNotifier(
            settings.retriever_url, settings.api_key.get_secret_value(), settings.retriever_timeout_s
        ),
        cpu_limiter=anyio.CapacityLimiter(settings.concurrency),
        metrics=metrics,
        audio=AudioStore(settings.audio_folder, int(settings.embedder_audio_max_mb * 2**20))
        if settings.embedder_keep_audio
        else None,
    )


def _readiness(app: FastAPI) -> tuple[bool, dict]:
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is None:
        return False, {"reason": "starting"}
    bundle = runtime.holder.bundle
    state = runtime.holder.state if bundle else None
    store_ok = runtime.store.ping()
    details = {
        "bundle_id": bundle.id if bundle else None,
        "encoder": runtime.encoder.name if runtime.encoder else None,
        "encoder_runtime": getattr(runtime.encoder, "runtime", None),  # torch / onnx (None: numpy MFCC)
        "onnx_providers": encoder_providers(runtime.encoder) if runtime.encoder else [],
        "encoder_error": runtime.encoder_error,
        "encoder_revision": state.content_revision if state else None,
        "codebooks": {"n_fields": state.codebooks.n_fields, "k": state.codebooks.k} if state else None,
        "store": store_ok,
        "retriever_url": runtime.notifier.base_url or None,
    }
    return bool(state and runtime.encoder and store_ok), details


def _count_upload_error(request: Request, code: str) -> None:
    if request.url.path == "/embed" and request.method == "POST":
        request.app.state.runtime.metrics.uploads.labels(code).inc()


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """The shared 422, except that a form without its file gets the clearer `no_file` (400)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if request.url.path == "/events":  # name the first bad event (index and field)
        refused = refusal_from_validation(errors)
        return error_response(refused.status, refused.code, refused.message, **refused.extra)
    code, message = "invalid_request", validation_message(errors)
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body", "file") for e in errors):
        code, message = "no_file", "no audio file in the request: send it as the multipart field 'file'"
    _count_upload_error(request, code)
    return error_response(ERROR_STATUS[code], code, message)
