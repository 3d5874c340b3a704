"""MfccEncoder: the weight-free default backend (numpy/scipy only), one pooled layer of D = 264.

Per frame (22.05 kHz, 2048-sample FFT, hop 512): 64 log-mel bands (dB), 20 MFCC, their deltas and
delta-deltas, 6 spectral statistics and an onset strength; mean and std over all frames of all windows,
plus 2 rhythm values from the onset envelope's autocorrelation (tempo and pulse clarity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import dct, rfft
from scipy.signal import correlate, get_window, savgol_filter

from encore.audio.encoder import AudioEncoder
from encore.audio.resample import DEFAULT_MIN_LAST_FRACTION, split_windows

SPECTRAL_STATS = ("centroid", "bandwidth", "rolloff", "flatness", "zcr", "log_rms")
_EPS = 1e-10


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, area-normalized (Slaney)."""
    mel = np.linspace(2595 * np.log10(1 + fmin / 700), 2595 * np.log10(1 + fmax / 700), n_mels + 2)
    edges = 700 * (10 ** (mel / 2595) - 1)
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    return (bank * (2.0 / (upper - lower))).astype(np.float32)


def _deltas(x: np.ndarray, order: int) -> np.ndarray:
    """Savitzky-Golay time derivative (librosa's method, width 9); zeros when too few frames."""
    width = min(9, x.shape[0] if x.shape[0] % 2 else x.shape[0] - 1)
    if width < 3:
        return np.zeros_like(x)
    return savgol_filter(x, width, polyorder=order, deriv=order, axis=0, mode="interp").astype(np.float32)


class MfccEncoder(AudioEncoder):
    name = "mfcc"
    revision = "1"
    sample_rate = 22_050
    window_seconds = 10.0
    window_policy = f"back-to-back windows; last kept if >= {DEFAULT_MIN_LAST_FRACTION} of a window"
    pooling = "mean+std over frames of all windows; tempo and pulse clarity from the onset autocorrelation"
    n_layers = 1

    def __init__(self, n_mels: int = 64, n_mfcc: int = 20, n_fft: int = 2048, hop: int = 512) -> None:
        self.n_mels, self.n_mfcc, self.n_fft, self.hop = n_mels, n_mfcc, n_fft, hop
        self.dim = len(self.feature_names())
        self._mel = mel_filterbank(self.sample_rate, n_fft, n_mels, fmin=20.0, fmax=self.sample_rate / 2)
        # Scale so a full-scale sine peaks near 0 dB whatever n_fft is.
        self._window = (get_window("hann", n_fft) / (get_window("hann", n_fft).sum() / 2)).astype(np.float32)
        self._freqs = np.linspace(0, 1, n_fft // 2 + 1, dtype=np.float32)  # fraction of Nyquist

    def params(self) -> dict[str, Any]:
        return {"n_mels": self.n_mels, "n_mfcc": self.n_mfcc, "n_fft": self.n_fft, "hop": self.hop}

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def feature_names(self) -> list[str]:
        per_frame = (
            [f"logmel_{i}" for i in range(self.n_mels)]
            + [f"mfcc_{i}" for i in range(self.n_mfcc)]
            + [f"mfcc_d1_{i}" for i in range(self.n_mfcc)]
            + [f"mfcc_d2_{i}" for i in range(self.n_mfcc)]
            + list(SPECTRAL_STATS)
            + ["onset"]
        )
        return [f"{n}_mean" for n in per_frame] + [f"{n}_std" for n in per_frame] + ["tempo_log2", "pulse"]

    def encode(self, mono: np.ndarray) -> np.ndarray:
        windows = split_windows(mono, self.sample_rate, self.window_seconds)
        # Frame each window's real samples only: zero padding would add fake silent frames to the stats.
        parts = [self._frame_features(w[:n]) for w, n in zip(windows.frames, windows.lengths, strict=True)]
        logmel = np.concatenate([p[0] for p in parts])
        other = np.concatenate([p[1] for p in parts])
        mfcc = dct(logmel, type=2, norm="ortho", axis=1)[:, : self.n_mfcc]
        frames = np.concatenate([logmel, mfcc, _deltas(mfcc, 1), _deltas(mfcc, 2), other], axis=1)
        rhythm = self._rhythm(other[:, -1])
        pooled = np.concatenate([frames.mean(axis=0), frames.std(axis=0), rhythm])
        return pooled.astype(np.float32)  # one layer: (D,)

    def _frame_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, n_mels) log-mel dB and (T, 7) spectral statistics + onset strength for one window."""
        half = self.n_fft // 2
        padded = np.pad(x, (half, half))  # centred frames, as librosa does (zeros: works for any length)
        framed = sliding_window_view(padded, self.n_fft)[:: self.hop]
        power = np.abs(rfft(framed * self._window, axis=1)) ** 2  # (T, n_fft//2 + 1)
        logmel = 10 * np.log10(power @ self._mel.T + _EPS)

        mag = np.sqrt(power)
        mag_sum = mag.sum(axis=1) + _EPS
        centroid = mag @ self._freqs / mag_sum
        # sqrt(E[f^2] - E[f]^2) under the magnitude weights: one matrix product, no (T, F) temporary.
        bandwidth = np.sqrt(np.maximum(mag @ self._freqs**2 / mag_sum - centroid**2, 0.0))
        cumulative = np.cumsum(mag, axis=1)  # magnitude-based, as librosa's rolloff
        rolloff_bin = (cumulative < 0.85 * cumulative[:, -1:]).sum(axis=1)
        rolloff = self._freqs[np.minimum(rolloff_bin, power.shape[1] - 1)]
        flatness = np.exp(np.mean(np.log(power + _EPS), axis=1)) / (power.mean(axis=1) + _EPS)
        signs = np.signbit(framed)
        zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
        log_rms = np.log10(np.sqrt(np.mean(framed.astype(np.float64) ** 2, axis=1)) + 1e-5)
        # Onset strength: mean positive rise of log-mel energy from the previous frame (spectral flux).
        onset = np.zeros(len(logmel))
        onset[1:] = np.maximum(0.0, np.diff(logmel, axis=0)).mean(axis=1)
        stats = np.stack([centroid, bandwidth, rolloff, flatness, zcr, log_rms, onset], axis=1)
        return logmel.astype(np.float32), stats.astype(np.float32)

    def _rhythm(self, onset: np.ndarray) -> np.ndarray:
        """log2(tempo / 120 BPM) and pulse clarity from the onset autocorrelation, 40-240 BPM."""
        env = onset.astype(np.float64) - onset.mean()
        lo, hi = int(self.frame_rate * 60 / 240), int(self.frame_rate * 60 / 40)
        if env.size <= lo + 1 or not np.any(env):
            return np.zeros(2, np.float32)
        ac = correlate(env, env, mode="full", method="fft")[env.size - 1 :]
        ac /= ac[0]
        lags = np.arange(lo, min(hi, env.size - 1) + 1)
        # A log-normal prior around 120 BPM (as librosa does) damps octave errors at the range ends.
        prior = np.exp(-0.5 * np.log2(60 * self.frame_rate / lags / 120) ** 2)
        lag = int(lags[np.argmax(ac[lags] * prior)])
        tempo = 60 * self.frame_rate / lag
        return np.array([np.log2(tempo / 120), ac[lag]], np.float32)
