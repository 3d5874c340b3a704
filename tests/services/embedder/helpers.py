"""Helpers shared by the embedder tests: generated audio, a tiny real bundle, request shortcuts."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from fastapi.testclient import TestClient

from encore.artifacts import BundleBuilder
from encore.audio import Codebooks
from encore.audio.content import ContentComponent
from encore.store import Store

API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}
GOOD_BUNDLE = "good-1"
OTHER_REVISION_BUNDLE = "other-rev"
RATE = 22_050
K = 4  # codebook size: small, so a handful of generated clips can fit it


def tone(freq: float, seconds: float, *, bpm: float = 120.0, rate: int = RATE, amp: float = 0.3) -> np.ndarray:
    """A sine with a pulse envelope at `bpm`: pitch and tempo differ between clips, as in music."""
    t = np.arange(int(seconds * rate)) / rate
    pulse = 0.5 + 0.5 * (np.sin(2 * np.pi * bpm / 60 * t) > 0)
    return (amp * pulse * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    """samples: (frames,) or (frames, channels)."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def write_bundle(root: Path, bundle_id: str, layers: np.ndarray, info: dict, *, current: bool) -> None:
    """A bundle holding only what the embedder reads: codebooks + the content component."""
    books = Codebooks.fit(layers, encoder_info=info, k=K, seed=0)
    with BundleBuilder(root, bundle_id, make_current=current) as builder:
        ContentComponent(books, "mfcc").write(builder)


@dataclass
class Recorder:
    """What the fake retriever received: (path, headers, JSON body) per request."""

    url: str
    calls: list[tuple[str, dict[str, str], dict]] = field(default_factory=list)


def offline_parts(store: Store) -> list[Path]:
    return sorted(store.settings.offline_dir.rglob("*.parquet"))


def post_embed(client: TestClient, data: bytes | None, headers: dict | None = AUTH, **form: object) -> httpx.Response:
    files = {"file": ("upload.bin", data)} if data is not None else None
    return client.post("/embed", files=files, data={k: str(v) for k, v in form.items()}, headers=headers)
