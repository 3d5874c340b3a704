"""Request and response models of the embedder API, with the examples the OpenAPI page shows."""

from __future__ import annotations

from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

from services.common import errors
from services.common.patterns import BUNDLE_ID_PATTERN, TRACK_ID_PATTERN
from services.embedder.encode import ERROR_STATUS

CODES = errors.COMMON_STATUS | ERROR_STATUS  # every code the embedder answers, with its status

_EMBEDDING_EXAMPLE = [0.12, -1.3, 0.57]
_TOKENS_EXAMPLE = [17]


class EmbedForm(BaseModel):
    """multipart/form-data of POST /embed: the audio file plus optional id and track_meta fields."""

    model_config = ConfigDict(extra="forbid")

    file: UploadFile = Field(description="Audio: WAV, FLAC, OGG/Vorbis, Opus, MP3, AAC/M4A.")
    track_id: str | None = Field(
        None,
        pattern=TRACK_ID_PATTERN,
        description="Store key of the track; a random hex id is generated when absent.",
        examples=["upload:8f3a9c"],
    )
    overwrite: bool = Field(False, description="Replace the stored track when track_id exists already.")
    artist_id: str | None = Field(None, max_length=128, description="Main artist id; '' when absent.")
    genre: str | None = Field(None, max_length=64, description="Primary genre label; '' when absent.")
    key: int | None = Field(None, ge=-1, le=11, description="Pitch class 0-11; -1 (unknown) when absent.")
    mode: int | None = Field(None, ge=-1, le=1, description="1 major, 0 minor; -1 (unknown) when absent.")
    language: str | None = Field(None, max_length=32, description="Lyrics language; '' when absent.")
    release_year: int | None = Field(None, ge=-1, le=2200, description="Year of release; -1 when absent.")

    def meta(self) -> dict[str, Any]:
        """The given track_meta fields (None for those not sent); popularity is never taken from a client."""
        names = ("artist_id", "genre", "key", "mode", "language", "release_year")
        return {name: getattr(self, name) for name in names}


class EmbedResponse(BaseModel):
    track_id: str = Field(description="The stored track's id (generated when none was sent).")
    bundle_id: str = Field(description="Bundle whose codebooks made the tokens.")
    encoder: str = Field(description="Encoder backend.")
    encoder_revision: str = Field(description="Encoder revision + codebook version, as stored with the vector.")
    n_layers: int = Field(description="Pooled encoder layers (L); their widths are in `layer_widths`.")
    layer_widths: list[int] = Field(description="Width of each pooled layer (MusiCNN: 561, 64, 64, 64, 200).")
    dim: int = Field(description="Length of the dense embedding (D).")
    n_tokens: int = Field(description="Audio tokens: one per layer (and codebook group).")
    embedding: list[float] = Field(description="Dense vector as stored (the chosen layer, standardized and bounded).")
    tokens: list[int] = Field(description="Nearest-centroid id per codebook, in [0, K).")
    typicality: float = Field(
        description="Share of training-catalog tracks at least as far from the catalog centre: 1 typical, 0 beyond "
        "every catalog track (its content is then bounded to the catalog's range before any model sees it)."
    )
    tags: dict[str, list[str]] = Field(
        description="The encoder's top 5 tags per tag head, most probable first (MusiCNN: 'mtt' MagnaTagATune, "
        "'msd' Million Song Dataset; {} for MFCC)."
    )
    seconds_used: float = Field(description="Seconds of audio encoded.")
    duration_seconds: float = Field(description="Length of the uploaded audio (header estimate when cut).")
    truncated: bool = Field(description="True when only the first ENCORE_EMBEDDER_MAX_AUDIO_SECONDS were encoded.")
    note: str | None = Field(None, description="Human-readable remark, e.g. that the audio was cut.")
    overwritten: bool = Field(description="True when an existing track was replaced (overwrite=true).")
    retriever_notified: bool = Field(description="Whether the retriever accepted the new item at once.")
    processing_ms: float = Field(description="Time from the received upload to the stored track.")
    timings_ms: dict[str, float] = Field(description="Per stage: read, decode, encode, store, notify.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "track_id": "upload:8f3a9c",
                    "bundle_id": "frappe-2026-11-22",
                    "encoder": "mfcc",
                    "encoder_revision": "1+cb.3f9a0c2d5e71",
                    "n_layers": 1,
                    "layer_widths": [264],
                    "dim": 264,
                    "n_tokens": 1,
                    "embedding": _EMBEDDING_EXAMPLE,
                    "tokens": _TOKENS_EXAMPLE,
                    "typicality": 0.42,
                    "tags": {"mtt": ["classical", "strings", "violin", "slow", "cello"], "msd": ["classical"]},
                    "seconds_used": 600.0,
                    "duration_seconds": 743.2,
                    "truncated": True,
                    "note": "only the first 600 s of 743.2 s were encoded (ENCORE_EMBEDDER_MAX_AUDIO_SECONDS)",
                    "overwritten": False,
                    "retriever_notified": True,
                    "processing_ms": 412.5,
                    "timings_ms": {"read": 3.1, "decode": 40.2, "encode": 350.7, "store": 12.4, "notify": 6.1},
                }
            ]
        }
    )


class TrackResponse(BaseModel):
    """Stored features of one track; a field the store does not hold for it is null."""

    track_id: str
    embedding: list[float] | None = None
    tokens: list[int] | None = None
    encoder: str | None = None
    encoder_revision: str | None = None
    typicality: float | None = None
    tags: dict[str, list[str]] = Field(default_factory=dict, description="Top tags per tag head, as /embed gives.")
    meta: dict[str, Any] = Field(description="track_meta fields (artist_id, genre, key, mode, ...).")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "track_id": "upload:8f3a9c",
                    "embedding": _EMBEDDING_EXAMPLE,
                    "tokens": _TOKENS_EXAMPLE,
                    "encoder": "mfcc",
                    "encoder_revision": "1+cb.3f9a0c2d5e71",
                    "typicality": 0.42,
                    "tags": {"mtt": ["classical", "strings", "violin", "slow", "cello"]},
                    "meta": {
                        "artist_id": "a42",
                        "genre": "jazz",
                        "key": 9,
                        "mode": 0,
                        "language": "",
                        "release_year": 2019,
                        "popularity": 0.0,
                    },
                }
            ]
        }
    )


class ReloadRequest(BaseModel):
    bundle_id: str | None = Field(
        None,
        pattern=BUNDLE_ID_PATTERN,
        description="Bundle folder under ENCORE_ARTIFACTS_DIR; absent: the one artifacts/CURRENT names.",
        examples=["frappe-2026-11-22"],
    )


class ReloadResponse(BaseModel):
    bundle_id: str
    previous_bundle_id: str | None
    encoder: str
    encoder_revision: str

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bundle_id": "frappe-2026-11-23",
                    "previous_bundle_id": "frappe-2026-11-22",
                    "encoder": "mfcc",
                    "encoder_revision": "1+cb.77c01e9b2a40",
                }
            ]
        }
    )


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given statuses, each listing the codes that produce it."""
    return errors.error_responses(*statuses, codes=CODES)
