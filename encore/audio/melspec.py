"""Log-mel spectrograms in numpy, the front end of the pretrained encoders (no torch, no torchaudio).

One definition covers both published front ends: torchaudio's MelSpectrogram + AmplitudeToDB as MuQ uses
them (HTK scale, no filter norm) and CLAP's feature extractor (HTK or Slaney scale and norm). Parity with
those definitions is tested in tests/encore/test_audio_melspec.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import rfft
from scipy.signal import get_window

# Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa and transformers use the same constants).
_SLANEY_F_SP = 200.0 / 3
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, scale: str) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'htk' or 'slaney', got {scale!r}")
    log_part = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(hz, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(hz >= _SLANEY_MIN_LOG_HZ, log_part, hz / _SLANEY_F_SP)


def mel_to_hz(mel: np.ndarray | float, scale: str) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"mel scale must be 'htk' or 'slaney', got {scale!r}")
    log_part = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mel - _SLANEY_MIN_LOG_MEL))
    return np.where(mel >= _SLANEY_MIN_LOG_MEL, log_part, mel * _SLANEY_F_SP)


def mel_filter_bank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float, scale: str = "htk", norm: str | None = None
) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangles with corners evenly spaced on the mel scale (torchaudio's construction).

    norm=None leaves peaks at 1 (torchaudio's default); norm="slaney" divides each by its width in Hz / 2.
    """
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney', got {norm!r}")
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    corners = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2), scale)
    widths = np.diff(corners)  # (n_mels + 1,)
    slopes = corners[None, :] - freqs[:, None]  # (F, n_mels + 2)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    bank = np.maximum(0.0, np.minimum(rising, falling)).T  # (n_mels, F)
    if norm == "slaney":
        bank *= (2.0 / (corners[2:] - corners[:-2]))[:, None]
    return bank


@dataclass(frozen=True)
class LogMelSpectrogram:
    """Power mel spectrogram in dB, 10 * log10(max(S, amin)): centred frames, reflect padding, periodic Hann.

    Call it on (n,) or (B, n) float32 audio; returns (B, n_mels, 1 + n // hop_length) float32.
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    f_min: float = 0.0
    f_max: float | None = None  # None: Nyquist
    scale: str = "htk"
    norm: str | None = None
    amin: float = 1e-10

    @cached_property
    def filters(self) -> np.ndarray:
        f_max = self.sample_rate / 2 if self.f_max is None else self.f_max
        bank = mel_filter_bank(self.sample_rate, self.n_fft, self.n_mels, self.f_min, f_max, self.scale, self.norm)
        return bank.astype(np.float32)

    @cached_property
    def window(self) -> np.ndarray:
        return get_window("hann", self.n_fft, fftbins=True).astype(np.float32)  # periodic, as torch.hann_window

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[1] <= self.n_fft // 2:
            raise ValueError(f"expected (B, n) audio with n > {self.n_fft // 2}, got shape {audio.shape}")
        half = self.n_fft // 2
        padded = np.pad(audio, ((0, 0), (half, half)), mode="reflect")
        frames = sliding_window_view(padded, self.n_fft, axis=1)[:, :: self.hop_length]  # (B, T, n_fft)
        power = np.abs(rfft(frames * self.window, axis=-1)) ** 2  # (B, T, F) float32
        mel = power @ self.filters.T  # (B, T, n_mels)
        db = 10.0 * np.log10(np.maximum(mel, self.amin))
        return np.ascontiguousarray(db.transpose(0, 2, 1), dtype=np.float32)
