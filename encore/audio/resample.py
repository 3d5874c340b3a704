"""Downmix to mono and resample to an encoder's rate (soxr; scipy resample_poly as the fallback)."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

try:
    import soxr
except ImportError:  # soxr is a core dependency; the fallback keeps a broken wheel from stopping serving
    soxr = None


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
