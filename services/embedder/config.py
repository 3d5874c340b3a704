"""Embedder settings: every value from an ENCORE_* environment variable.

ENCORE_ARTIFACTS_DIR, ENCORE_API_KEY, ENCORE_LOG_LEVEL (ServiceSettings), ENCORE_PORT, ENCORE_MAX_UPLOAD_MB,
ENCORE_MAX_AUDIO_SECONDS, ENCORE_ENCODER, ENCORE_WEIGHTS_DIR, ENCORE_ENCODER_RUNTIME, ENCORE_ENCODER_THREADS,
ENCORE_RETRIEVER_URL, ENCORE_RETRIEVER_TIMEOUT_S, ENCORE_CONCURRENCY, ENCORE_MAX_UPLOADS_IN_FLIGHT,
ENCORE_CORS_ORIGINS, ENCORE_KEEP_AUDIO, ENCORE_AUDIO_DIR, ENCORE_AUDIO_MAX_MB, ENCORE_AUDIO_LINK_TTL_S,
ENCORE_DATA_DIR; the store reads ENCORE_FEAST_DATA_DIR, ENCORE_FEAST_PROJECT, ENCORE_FEAST_ONLINE and ENCORE_REDIS_URL
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
    # The listening room (services/embedder/listen.py). Origins whose pages may call this service from a
    # browser (CORS), comma-separated: the ranker's page by default.
    cors_origins: str = "http://127.0.0.1:8000,http://localhost:8000"
    # Keep uploaded audio for playback (the demo stack turns it on): content-addressed under audio_dir, the
    # least recently used files evicted past audio_max_mb (services/embedder/audio_store.py).
    keep_audio: bool = False
    audio_dir: Path | None = None  # unset: <ENCORE_DATA_DIR>/audio
    audio_max_mb: float = Field(512.0, gt=0)
    audio_link_ttl_s: int = Field(600, ge=1, le=86_400)  # how long a signed audio link opens the audio
    data_dir: Path = PROJECT_ROOT / "data"  # the bootstrap's worlds (ENCORE_DATA_DIR): catalog tracks' audio

    @property
    def audio_folder(self) -> Path:
        return self.audio_dir or self.data_dir / "audio"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES


@lru_cache(maxsize=1)
def get_settings() -> EmbedderSettings:
    return EmbedderSettings()
