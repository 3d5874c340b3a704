"""Decoded audio made into an encoder's input: downmix to mono, resample to the encoder's rate (soxr; scipy
resample_poly as the fallback), split into fixed-length windows, the unit every encoder sees (`split_windows`)."""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import resample_poly

try:
    import soxr
except ImportError:  # soxr is a core dependency; the fallback keeps a broken wheel from stopping serving
    soxr = None

DEFAULT_MIN_LAST_FRACTION = 0.5


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(channels, frames) or (frames,) -> (frames,) float32, the plain channel mean."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise ValueError(f"expected (channels, frames), got shape {samples.shape}")
    return samples.mean(axis=0, dtype=np.float32)


def resample(mono: np.ndarray, orig_rate: int, target_rate: int, *, use_soxr: bool = True) -> np.ndarray:
    """Resample a 1-D signal; returns float32 of length round(len * target / orig)."""
    mono = np.asarray(mono, dtype=np.float32)
    if mono.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {mono.shape}")
    if orig_rate == target_rate:
        return mono
    if use_soxr and soxr is not None:
        return soxr.resample(mono, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    g = gcd(int(orig_rate), int(target_rate))
    return resample_poly(mono, target_rate // g, orig_rate // g).astype(np.float32)


def to_encoder_input(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Decoded (channels, frames) -> mono float32 at `target_rate`, what AudioEncoder.encode takes."""
    return resample(to_mono(samples), orig_rate, target_rate)


@dataclass(frozen=True)
class Windows:
    frames: np.ndarray  # (n_windows, window_samples) float32, zero-padded
    lengths: np.ndarray  # (n_windows,) int64, real samples in each window

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def split_windows(
    mono: np.ndarray,
    sample_rate: int,
    window_seconds: float,
    *,
    hop_seconds: float | None = None,
    min_last_fraction: float = DEFAULT_MIN_LAST_FRACTION,
    fill: str = "zeros",
) -> Windows:
    """Deterministic policy: windows start at 0 and step by `hop` (default: the window, no overlap).

    Samples left after the last full window become one more zero-padded window (one hop on) when they
    amount to at least `min_last_fraction` of a window; shorter tails are dropped. A clip shorter than
    one window is always one zero-padded window. `lengths` says how many samples of each are real.
    fill="repeat" fills a window's missing tail with the track again from its start (repeated as often as
    needed) instead of zeros: MuQ-MuLan's rule for its last clip and CLAP's "repeatpad", so a pretrained
    encoder never sees seconds of digital silence it was not trained on.
    """
    mono = np.asarray(mono, dtype=np.float32)
    if mono.ndim != 1 or mono.size == 0:
        raise ValueError(f"expected a non-empty 1-D signal, got shape {mono.shape}")
    if fill not in ("zeros", "repeat"):
        raise ValueError(f"fill must be 'zeros' or 'repeat', got {fill!r}")
    if not 0.0 <= min_last_fraction <= 1.0:
        raise ValueError(f"min_last_fraction must be in [0, 1], got {min_last_fraction}")
    size = int(round(window_seconds * sample_rate))
    hop = size if hop_seconds is None else int(round(hop_seconds * sample_rate))
    if size <= 0 or hop <= 0:
        raise ValueError("window and hop must each span at least one sample")

    n = mono.size
    starts = list(range(0, max(n - size, 0) + 1, hop)) if n >= size else [0]
    # Samples after the last full window become one more (padded) window if there are enough of them.
    uncovered = n - (starts[-1] + size)
    if uncovered > 0 and uncovered >= min_last_fraction * size:
        starts.append(starts[-1] + hop)

    frames = np.zeros((len(starts), size), dtype=np.float32)
    lengths = np.empty(len(starts), dtype=np.int64)
    for i, start in enumerate(starts):
        chunk = mono[start : start + size]
        frames[i, : chunk.size] = chunk
        lengths[i] = chunk.size
        if fill == "repeat" and chunk.size < size:
            missing = size - chunk.size
            frames[i, chunk.size :] = np.resize(mono, missing)  # np.resize repeats the track from its start
    return Windows(frames=frames, lengths=lengths)
