"""What route handlers need, as Annotated aliases: a signature reads as the list of its inputs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

import anyio
from fastapi import Depends, Request

from encore.artifacts import BundleHolder
from encore.audio import AudioEncoder
from encore.settings import EmbedderSettings
from encore.store import Store
from services.common.observability import EmbedderMetrics
from services.embedder.audio_store import AudioStore
from services.embedder.encode import EmbedderState, EmbedError
from services.embedder.retriever import RetrieverNotifier


@dataclass
class Runtime:
    """Per-process state built by the lifespan (app.state.runtime)."""

    settings: EmbedderSettings
    store: Store
    holder: BundleHolder[EmbedderState]
    encoder: AudioEncoder | None  # None when the configured backend cannot be built here
    encoder_error: str | None
    notifier: RetrieverNotifier
    cpu_limiter: anyio.CapacityLimiter  # bounds concurrent decode + encode work
    metrics: EmbedderMetrics
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # check-then-write, one at a time
    audio: AudioStore | None = None  # uploaded audio kept for playback (ENCORE_KEEP_AUDIO)


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_state(runtime: RuntimeDep) -> EmbedderState:
    """The loaded bundle's state, taken once per request so a reload mid-request never mixes bundles."""
    if runtime.encoder is None:
        raise EmbedError("encoder_unavailable", runtime.encoder_error or "no encoder")
    if not runtime.holder.loaded:
        raise EmbedError("not_ready", "no bundle loaded; see /readyz, then POST /admin/reload")
    return runtime.holder.state


StateDep = Annotated[EmbedderState, Depends(get_state)]


def get_settings(runtime: RuntimeDep) -> EmbedderSettings:
    return runtime.settings


SettingsDep = Annotated[EmbedderSettings, Depends(get_settings)]


def get_store(runtime: RuntimeDep) -> Store:
    return runtime.store


StoreDep = Annotated[Store, Depends(get_store)]
