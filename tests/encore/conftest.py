"""Shared audio fixtures: the real clips in ../shared/data/audio and generated test signals."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from encore.settings import EncoreSettings

SHARED_DATA = EncoreSettings().datasets_dir  # ENCORE_DATASETS_DIR, default ../shared/data
AUDIO_DIR = SHARED_DATA / "audio"


class Signals:
    """Generated-audio helpers, handed to tests through the `signals` fixture."""

    @staticmethod
    def sine(freq: float, seconds: float, rate: int, channels: int = 1, amp: float = 0.3) -> np.ndarray:
        """(frames, channels) float32 sine; channel c is scaled by 1 / (c + 1) so channels differ."""
        t = np.arange(int(round(seconds * rate))) / rate
        wave = amp * np.sin(2 * np.pi * freq * t)
        return np.stack([wave / (c + 1) for c in range(channels)], axis=1).astype(np.float32)

    @staticmethod
    def sf_bytes(frames: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, frames, rate, format=fmt, subtype=subtype)
        return buf.getvalue()

    @staticmethod
    def av_bytes(
        frames: np.ndarray,
        rate: int,
        container: str = "mp4",
        codec: str = "aac",
        options: dict | None = None,
        qscale: int | None = None,
    ) -> bytes:
        """Encode (frames, channels) float32 with the FFmpeg bundled in PyAV (AAC in MP4 by default)."""
        layout = {1: "mono", 2: "stereo"}[frames.shape[1]]
        buf = io.BytesIO()
        with av.open(buf, "w", format=container, options=options or {}) as out:
            stream = out.add_stream(codec, rate=rate, layout=layout)
            if qscale is not None:  # variable bitrate (libmp3lame's -q:a)
                stream.codec_context.qscale = qscale
            for start in range(0, len(frames), 1024):
                chunk = np.ascontiguousarray(frames[start : start + 1024].T)
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                frame.sample_rate = rate
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return buf.getvalue()

    @staticmethod
    def has_encoder(codec: str) -> bool:
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            return False
        return True


@pytest.fixture(scope="session")
def signals() -> type[Signals]:
    return Signals


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    if not (AUDIO_DIR / "manifest.csv").is_file():
        pytest.skip(f"real audio clips not found at {AUDIO_DIR} (the shared data folder beside the repo)")
    return AUDIO_DIR


@pytest.fixture(scope="session")
def audio_manifest(audio_dir: Path) -> list[dict[str, str]]:
    with open(audio_dir / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))
