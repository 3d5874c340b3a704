"""Embedder settings: every value from an ENCORE_* environment variable.

ENCORE_ARTIFACTS_DIR, ENCORE_API_KEY, ENCORE_LOG_LEVEL (ServiceSettings), ENCORE_PORT, ENCORE_MAX_UPLOAD_MB,
ENCORE_MAX_AUDIO_SECONDS, ENCORE_ENCODER, ENCORE_WEIGHTS_DIR, ENCORE_ENCODER_RUNTIME, ENCORE_ENCODER_THREADS,
ENCORE_RETRIEVER_URL, ENCORE_RETRIEVER_TIMEOUT_S, ENCORE_CONCURRENCY, ENCORE_MAX_UPLOADS_IN_FLIGHT,
ENCORE_EVENTS_MAX_BATCH, ENCORE_EVENTS_MAX_FUTURE_S, ENCORE_EVENTS_RETENTION_DAYS, ENCORE_EVENTS_RECENT_N,
ENCORE_EVENTS_COMPACT_PARTS; the
store reads ENCORE_FEAST_DATA_DIR, ENCORE_FEAST_PROJECT, ENCORE_FEAST_ONLINE and ENCORE_REDIS_URL
(encore.store.StoreSettings).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from encore.audio.encoder import DEFAULT_ENCODER
from services.common.settings import PROJECT_ROOT, ServiceSettings

# Room for the multipart framing and the small form fields around the file: the whole request body may
# exceed the file limit by this much before it is cut off while streaming.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class EmbedderSettings(ServiceSettings):
    port: int = 8002
    max_upload_mb: float = Field(50.0, gt=0)  # the audio file itself, in MiB
    max_audio_seconds: float = Field(600.0, gt=0)  # only the first N seconds are decoded and encoded
    encoder: str = DEFAULT_ENCODER  # backend name (encore.audio.ENCODERS); the bundle's codebooks must match it
    weights_dir: Path = PROJECT_ROOT / "weights"  # local model folders for weighted backends; never a hub
    # auto: the ONNX fp32 export when there is one, else torch; or torch, onnx, onnx-int8 (encore.audio.weights).
    encoder_runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    encoder_threads: int | None = Field(None, ge=1)  # ONNX Runtime intra-op threads per encode (None: all cores)
    retriever_url: str = "http://127.0.0.1:8001"  # empty: do not notify a retriever
    retriever_timeout_s: float = Field(1.0, gt=0)
    concurrency: int = Field(2, ge=1)  # decodes/encodes running at once (each holds a CPU core)
    # Uploads held in memory at once (read, decoding, encoding or waiting for a core); beyond: 503 + Retry-After.
    # Each may take ~2.5x its file size while decoded, so this times ENCORE_MAX_UPLOAD_MB bounds upload memory.
    max_uploads_in_flight: int = Field(4, ge=1)
    # POST /events (encore/events.py, docs/events.md)
    events_max_batch: int = Field(1000, ge=1, le=10_000)  # events per request; more: 413
    events_max_future_s: float = Field(300.0, ge=0)  # an event time further ahead than this is refused
    events_retention_days: float = Field(7.0, gt=0)  # seen event ids kept; older events are refused
    events_recent_n: int = Field(50, ge=1, le=1000)  # events kept in user_activity.recent_tracks
    events_compact_parts: int = Field(64, ge=2)  # parts per level of the offline log before they are merged

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES


@lru_cache(maxsize=1)
def get_settings() -> EmbedderSettings:
    return EmbedderSettings()
