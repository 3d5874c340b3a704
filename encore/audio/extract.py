"""Batch content extraction for a catalog: decode -> encode every track, resumable, atomic outputs.

Writes out_dir/content.npz (track_ids (N,) str, layers (N, total) float32 (the flat pooled layers, their widths in
the manifest's encoder info: encore/audio/layers.py), and with tags=True each track's top
tags in the store's form, encore.audio.encoder.format_tags) and out_dir/manifest.json.
Per-track vectors live in out_dir/work/<encoder fingerprint>/ until the run finishes, so a killed run
continues where it stopped and a changed encoder never reuses another encoder's vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from encore.audio.decode import AudioError, decode_audio
from encore.audio.encoder import AudioEncoder, format_tags
from encore.io import sha256_file, write_json_atomic

CONTENT_FILE = "content.npz"
MANIFEST_FILE = "manifest.json"


def encoder_fingerprint(info: dict[str, Any], max_seconds: float | None = None) -> str:
    """Names the work dir: vectors are reused only for the same encoder settings and decode length."""
    key = json.dumps({"encoder": info, "max_seconds": max_seconds}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def extract_catalog(
    items: dict[str, Path],
    encoder: AudioEncoder,
    out_dir: str | Path,
    *,
    resume: bool = True,
    max_seconds: float | None = None,
    progress: bool = True,
    tags: bool = False,
) -> Path:
    """Encode every track in `items` (track id -> audio file); returns the path of content.npz.

    A track that fails to decode is listed in the manifest under "skipped" with its AudioError code (or
    "unreadable") and is tried again on the next run. Finished vectors stay in out_dir/work/ for resuming;
    delete that folder once the run is final. resume=False discards them and starts over. tags=True also keeps
    the encoder's top tags per track (an encoder without tag heads gives "" for every track).
    """
    out_dir = Path(out_dir)
    info = encoder.describe()
    work_dir = out_dir / "work" / encoder_fingerprint(info, max_seconds)
    if not resume and work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    expected_shape = (encoder.layout.total,)

    track_ids: list[str] = []
    vectors: list[np.ndarray] = []
    track_tags: list[str] = []
    skipped: list[dict[str, str]] = []
    n_reused = 0
    for track_id, path in tqdm(items.items(), desc=f"extract {encoder.name}", unit="track", disable=not progress):
        done_path = work_dir / f"{hashlib.sha256(track_id.encode()).hexdigest()[:32]}.npy"
        tags_path = done_path.with_suffix(".tags.json")
        vector = _load_done(done_path, expected_shape) if resume else None
        text = _load_tags(tags_path) if tags and vector is not None else ""
        if vector is not None and text is not None:
            n_reused += 1
        else:
            encoded = _encode_one(encoder, Path(path), max_seconds, done_path, tags_path if tags else None)
            if isinstance(encoded, dict):  # refused: one item's problem, not the run's
                skipped.append({"track_id": track_id, **encoded})
                continue
            vector, text = encoded
        track_ids.append(track_id)
        vectors.append(vector)
        track_tags.append(text or "")

    layers = np.stack(vectors) if vectors else np.zeros((0, *expected_shape), np.float32)
    content_path = out_dir / CONTENT_FILE
    arrays = {"track_ids": np.array(track_ids, dtype=str), "layers": layers}
    if tags:
        arrays["tags"] = np.array(track_tags, dtype=str)
    _save_npz_atomic(content_path, **arrays)
    counts = {"items": len(items), "encoded": len(track_ids), "reused": n_reused, "skipped": len(skipped)}
    write_json_atomic(out_dir / MANIFEST_FILE, _manifest(encoder, max_seconds, content_path, layers, counts, skipped))
    return content_path


def _encode_one(
    encoder: AudioEncoder, path: Path, max_seconds: float | None, done_path: Path, tags_path: Path | None
) -> tuple[np.ndarray, str] | dict[str, str]:
    """One track's flat layers and tags ("" unless `tags_path`), saved for resuming; or why it was skipped."""
    try:
        decoded = decode_audio(path.read_bytes(), max_seconds=max_seconds)
    except AudioError as exc:
        return {"code": exc.code, "message": exc.message}
    except OSError as exc:  # a missing or unreadable file
        return {"code": "unreadable", "message": str(exc)}
    text = ""
    if tags_path is not None:
        vector, found = encoder.encode_with_tags(decoded)
        text = format_tags(found)
        write_json_atomic(tags_path, {"tags": text})
    else:
        vector = encoder.encode_decoded(decoded)
    _save_npy_atomic(done_path, vector)
    return vector, text


def _manifest(
    encoder: AudioEncoder,
    max_seconds: float | None,
    content_path: Path,
    layers: np.ndarray,
    counts: dict[str, int],
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "kind": "audio_content",
        "encoder": encoder.describe(),
        # torch / onnx (numpy for MFCC): how the vectors were computed; the precision is in encoder.params.
        "runtime": getattr(encoder, "runtime", "numpy"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "max_seconds": max_seconds,
        "counts": counts,
        "skipped": skipped,
        "files": {CONTENT_FILE: {"sha256": sha256_file(content_path), "shape": list(layers.shape)}},
    }


def load_catalog(out_dir: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Read what extract_catalog wrote, checking the arrays against the manifest's checksum."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    if sha256_file(out_dir / CONTENT_FILE) != manifest["files"][CONTENT_FILE]["sha256"]:
        raise ValueError(f"{out_dir / CONTENT_FILE} does not match the checksum in {MANIFEST_FILE}")
    with np.load(out_dir / CONTENT_FILE, allow_pickle=False) as npz:
        track_ids, layers = [str(t) for t in npz["track_ids"]], npz["layers"]
    # A catalog written before layers were flat holds (N, L, D): the same values, row-major.
    return track_ids, layers.reshape(len(layers), -1), manifest


def load_catalog_tags(out_dir: str | Path) -> dict[str, str]:
    """track id -> top tags in the store's form, as extract_catalog(tags=True) kept them ({} when it did not)."""
    out_dir = Path(out_dir)
    with np.load(out_dir / CONTENT_FILE, allow_pickle=False) as npz:
        if "tags" not in npz:
            return {}
        return {str(t): str(tags) for t, tags in zip(npz["track_ids"], npz["tags"], strict=True)}


def _load_tags(path: Path) -> str | None:
    """A finished track's tags, or None when absent or unreadable (then the track is encoded again)."""
    try:
        text = json.loads(path.read_text())["tags"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return text if isinstance(text, str) else None


def _load_done(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A finished track's vector, or None when absent or unusable (then it is simply recomputed)."""
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if vector.shape != shape or vector.dtype != np.float32 or not np.isfinite(vector).all():
        return None
    return vector


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with _atomic_file(path) as fh:
        np.save(fh, array, allow_pickle=False)


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    with _atomic_file(path) as fh:
        np.savez(fh, **arrays)


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A temp file beside `path`, renamed over it on a clean exit and deleted otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
