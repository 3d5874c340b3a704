"""The embedder's logic without HTTP: bundle -> state, audio bytes -> embedding + tokens, and the store write.

Error codes and the HTTP status each becomes (ERROR_STATUS; every error body is {"detail": {"code", "message"}}):
    400 no_file, empty_file, corrupt            the request or the file is malformed or cut short
    401 unauthorized                            missing or wrong X-API-Key
    403 forbidden                               writes are disabled (no ENCORE_API_KEY configured)
    404 not_found                               GET /tracks/{id} of an unknown track
    409 track_exists                            the track_id is taken and overwrite=true was not given
    413 too_large                               the file (or the request body) is over the upload limit
    415 not_audio, unsupported_codec            not an audio file, or no decoder for its codec
    422 zero_length, too_short, silent,         decodable but unusable audio (too_short: under
        non_finite,                             MIN_AUDIO_SECONDS, encore/audio/decode.py),
        too_many_channels, bad_sample_rate,
        invalid_request, invalid_track,         bad form fields (track_id pattern, metadata ranges),
        bundle_refused                          and a bundle /admin/reload would not load (old one serves on)
    503 not_ready, store_unavailable,           no bundle loaded yet; the feature store failed (logged);
        encoder_unavailable, overloaded         the configured encoder is not installed (the message names what);
                                                too many uploads in flight (with Retry-After)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from encore import feature_names as fn
from encore import track_layers
from encore.artifacts import Bundle, current_bundle_path
from encore.audio import AudioEncoder, AudioError, Codebooks, decode_audio, stages
from encore.audio.content import ContentComponent
from encore.audio.decode import MIN_AUDIO_SECONDS
from encore.audio.encoder import Tags, format_tags
from encore.errors import EncoreError
from encore.store import InvalidTrackError, Store
from services.common.patterns import BUNDLE_ID_RE

log = logging.getLogger(__name__)

ERROR_STATUS: dict[str, int] = {
    "no_file": 400,
    "empty_file": 400,
    "corrupt": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "track_exists": 409,
    "too_large": 413,
    "not_audio": 415,
    "unsupported_codec": 415,
    "zero_length": 422,
    "too_short": 422,
    "silent": 422,
    "non_finite": 422,
    "too_many_channels": 422,
    "bad_sample_rate": 422,
    "invalid_request": 422,
    "invalid_track": 422,
    "bundle_refused": 422,
    "overloaded": 503,
    "not_ready": 503,
    "store_unavailable": 503,
    "encoder_unavailable": 503,
}


T = TypeVar("T")


class EmbedError(EncoreError):
    """A refused request that is not about the audio itself; `code` is a key of ERROR_STATUS."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_STATUS, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class EmbedderState:
    """What one bundle gives the embedder; swapped as a whole by BundleHolder."""

    bundle_id: str
    encoder: AudioEncoder
    content: ContentComponent  # codebooks + how the dense vector is cut (encore/audio/content.py)
    content_revision: str  # encoder revision + codebook version: what the stored vector's revision says

    @property
    def codebooks(self) -> Codebooks:
        return self.content.codebooks


@dataclass(frozen=True)
class Embedding:
    embedding: np.ndarray  # (D,) float32
    tokens: np.ndarray  # (L * groups,) int64, ids in [0, K)
    typicality: float  # share of training-catalog tracks at least as far from the catalog centre
    tags: Tags  # the encoder's top tags per head ({} for MFCC)
    seconds_used: float
    duration_seconds: float
    truncated: bool
    decode_ms: float
    encode_ms: float  # all of the encode, tokens included
    encode_parts_ms: dict[str, float] = field(default_factory=dict)  # parts of encode_ms the encoder timed
    layers: np.ndarray | None = None  # (total,) float32 flat pooled layers: kept with the track (encore/track_layers)


def build_state(bundle: Bundle, encoder: AudioEncoder) -> EmbedderState:
    """Read the content component of a verified bundle; raise BundleError (or CodebookMismatch) when it does
    not fit `encoder`, so vectors from two encoders never meet in one codebook."""
    content = ContentComponent.read(bundle, encoder)
    return EmbedderState(bundle.id, encoder, content, content.revision(encoder.revision))


def embed_audio(data: bytes, state: EmbedderState, *, max_seconds: float) -> Embedding:
    """Decode, downmix, resample, window, encode, tokenize. CPU-bound: run it in a worker thread.

    Raises AudioError (its code says why) for anything that is not usable audio.
    """
    start = time.perf_counter()
    decoded = decode_audio(data, max_seconds=max_seconds)
    if decoded.duration_seconds < MIN_AUDIO_SECONDS:
        raise AudioError(
            "too_short", f"{decoded.duration_seconds:.2f} s of audio; at least {MIN_AUDIO_SECONDS:g} s is needed"
        )
    decoded_at = time.perf_counter()
    with stages.collect() as parts:  # the encoder's own stages (MusiCNN: resample, mel, network)
        layers, tags = state.encoder.encode_with_tags(decoded)  # flat pooled layers
    content = state.content.features(layers)
    done = time.perf_counter()
    return Embedding(
        embedding=content.embedding[0],
        tokens=content.tokens[0],
        typicality=float(content.typicality[0]),
        tags=tags,
        seconds_used=decoded.seconds_used,
        duration_seconds=decoded.duration_seconds,
        truncated=decoded.truncated,
        decode_ms=(decoded_at - start) * 1000,
        encode_ms=(done - decoded_at) * 1000,
        encode_parts_ms=parts,
        layers=np.asarray(layers, dtype=np.float32).reshape(-1),
    )


def new_track_id() -> str:
    return uuid.uuid4().hex


def track_meta(given: dict[str, Any]) -> dict[str, Any]:
    """A full track_meta row: the given fields over the store's unknown values (None means not given)."""
    return fn.NEW_TRACK_META | {name: value for name, value in given.items() if value is not None}


def write_track(
    store: Store,
    track_id: str,
    meta: dict[str, Any],
    result: Embedding,
    state: EmbedderState,
    *,
    overwrite: bool,
) -> bool:
    """Keep the track's pooled layers (encore/track_layers.py), push the track online and to the offline source;
    returns whether it replaced an existing track.

    Blocking (Feast + parquet). The caller serializes writes so check-then-write is not raced in-process.
    """
    exists = _store_call("read", store.track_exists, track_id)
    if exists and not overwrite:
        raise EmbedError("track_exists", f"track {track_id!r} already exists; send overwrite=true to replace it")
    content = {
        "embedding": result.embedding,
        "tokens": result.tokens,
        "encoder": state.encoder.name,
        "encoder_revision": state.content_revision,
        "typicality": result.typicality,
        "tags": format_tags(result.tags),
    }
    try:
        _store_call("write", store.push_track, track_id, meta, content, codebook_size=state.codebooks.k)
    except InvalidTrackError as exc:
        raise EmbedError("invalid_track", str(exc)) from exc
    if result.layers is not None:  # after the push: a refused track never leaves layers that are not its content's
        where, encoder = store.settings.data_dir, state.encoder
        _store_call("write", track_layers.write, where, track_id, result.layers, encoder.name, encoder.revision)
    return exists


def read_track(store: Store, track_id: str) -> dict[str, Any]:
    """The stored features of one track (content and meta); EmbedError not_found when unknown."""
    rows = _store_call("read", store.get_tracks, [track_id])
    if track_id not in rows:
        raise EmbedError("not_found", f"no track {track_id!r} in the store")
    return rows[track_id]


def _store_call(what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store call; a failure that is not about the track itself becomes a 503 (details in the log)."""
    try:
        return call(*args, **kwargs)
    except InvalidTrackError:
        raise
    except Exception as exc:  # Feast, SQLite and Redis errors have no common base class
        log.exception("feature store %s failed", what)
        message = f"the feature store failed during the {what} ({type(exc).__name__})"
        if what == "write":  # the online push may have landed for one view and not the other
            message += "; the track may be partly stored: retry with overwrite=true"
        raise EmbedError("store_unavailable", message) from exc


def bundle_dir(artifacts_dir: Path, bundle_id: str | None) -> Path:
    """The folder of `bundle_id` under artifacts_dir, or the CURRENT one; never a path outside it."""
    if bundle_id is None:
        return current_bundle_path(artifacts_dir)
    if not BUNDLE_ID_RE.fullmatch(bundle_id):
        raise EmbedError("invalid_request", f"bad bundle_id {bundle_id[:40]!r}")
    return artifacts_dir / bundle_id
