"""Uploaded audio kept for listening: a content-addressed folder with a size cap, and signed links to it.

Layout under ENCORE_EMBEDDER_AUDIO_DIR:
    blobs/<sha256[:2]>/<sha256>     the bytes, once per distinct content (two ids uploading one file share it)
    refs/<sha256 of the track id>.json   {"track_id", "sha256", "media_type", "bytes"}
Eviction: when keeping a file would take the blobs past ENCORE_EMBEDDER_AUDIO_MAX_MB, the least recently used blobs
(by modification time; every play touches it) are deleted, with their refs, until it fits. A file larger
than the whole cap is not kept. Every write goes through encore.io.atomic_path (no partial files).

A signed link is `?expires=<unix s>&sig=<hex>`, sig = HMAC-SHA256(API key, "<track_id>\\n<expires>"): it opens
one track's audio until it expires, so an <audio> element can play without sending the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import mimetypes
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from encore.io import atomic_path

log = logging.getLogger(__name__)

SNIFF = {b"RIFF": "audio/wav", b"fLaC": "audio/flac", b"OggS": "audio/ogg", b"ID3": "audio/mpeg"}


def media_type_of(data: bytes, filename: str | None) -> str:
    """From the first bytes (what was really sent), else the file name, else a generic type."""
    for magic, media_type in SNIFF.items():
        if data.startswith(magic):
            return media_type
    guessed = mimetypes.guess_type(filename or "")[0]
    return guessed if guessed and guessed.startswith("audio/") else "application/octet-stream"


@dataclass(frozen=True)
class StoredAudio:
    track_id: str
    path: Path
    media_type: str


class AudioStore:
    """Keeps, finds and forgets uploaded audio; one lock per process around the folder's bookkeeping."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self._lock = threading.Lock()

    def _ref(self, track_id: str) -> Path:
        return self.folder / "refs" / f"{hashlib.sha256(track_id.encode()).hexdigest()}.json"

    def _blob(self, sha: str) -> Path:
        return self.folder / "blobs" / sha[:2] / sha

    def keep(self, track_id: str, data: bytes, filename: str | None) -> bool:
        """Store the upload's bytes for `track_id` (replacing what the id had); False when larger than the cap."""
        if len(data) > self.max_bytes:
            log.warning("audio of %s not kept: %d bytes, over the cap of %d", track_id, len(data), self.max_bytes)
            return False
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._evict_for(len(data))
            blob = self._blob(sha)
            if not blob.exists():
                blob.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(blob) as tmp:
                    tmp.write_bytes(data)
            ref = {"track_id": track_id, "sha256": sha, "media_type": media_type_of(data, filename), "bytes": len(data)}
            self._ref(track_id).parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self._ref(track_id)) as tmp:
                tmp.write_text(json.dumps(ref))
        return True

    def find(self, track_id: str) -> StoredAudio | None:
        try:
            ref = json.loads(self._ref(track_id).read_text())
        except FileNotFoundError:
            return None
        blob = self._blob(ref["sha256"])
        if not blob.exists():
            return None
        blob.touch()  # played: the most recently used now
        return StoredAudio(track_id, blob, ref["media_type"])

    def forget(self, track_id: str) -> bool:
        """Drop the id's ref, and its blob when no other ref points at it; False when nothing was kept."""
        with self._lock:
            try:
                ref = json.loads(self._ref(track_id).read_text())
            except FileNotFoundError:
                return False
            self._ref(track_id).unlink()
            if not any(r["sha256"] == ref["sha256"] for r in self._refs()):
                self._blob(ref["sha256"]).unlink(missing_ok=True)
            return True

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.folder / "blobs").glob("*/*"))

    def _refs(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in (self.folder / "refs").glob("*.json")]

    def _evict_for(self, incoming: int) -> None:
        """Delete least recently used blobs (and their refs) until `incoming` more bytes fit (lock held)."""
        blobs = sorted((self.folder / "blobs").glob("*/*"), key=lambda p: p.stat().st_mtime)
        used = sum(p.stat().st_size for p in blobs)
        evicted: set[str] = set()
        for blob in blobs:
            if used + incoming <= self.max_bytes:
                break
            used -= blob.stat().st_size
            blob.unlink()
            evicted.add(blob.name)
        if evicted:
            for path in (self.folder / "refs").glob("*.json"):
                if json.loads(path.read_text())["sha256"] in evicted:
                    path.unlink()
            log.info("audio cap: evicted %d least recently used files", len(evicted))


def sign(key: str, track_id: str, expires: int) -> str:
    return hmac.new(key.encode(), f"{track_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signature_ok(key: str, track_id: str, expires: int, sig: str) -> bool:
    """True when `sig` was made with `key` for this track and expiry, and the expiry has not passed."""
    return bool(key) and expires >= time.time() and hmac.compare_digest(sign(key, track_id, expires), sig)
