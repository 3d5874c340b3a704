"""The numpy mel front ends match the published definitions: MuQ's torchaudio MelSpectrogram + AmplitudeToDB
(reproduced with librosa: HTK scale, no filter norm, reflect-padded centred frames, 10 log10 clamp 1e-10) and
CLAP's transformers ClapFeatureExtractor."""

from __future__ import annotations

import librosa  # dev extra: the reference implementation, never used by encore itself
import numpy as np
import pytest

from encore.audio.melspec import LogMelSpectrogram, hz_to_mel, mel_filter_bank, mel_to_hz
from encore.audio.pretrained import ClapFrontEnd, MuQFrontEnd


def _music_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Tones, a chirp and a little noise: energy across the spectrum, with quiet and loud bins."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * (300 + 400 * t) * t)
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_scale_round_trip(scale: str) -> None:
    hz = np.array([0.0, 440.0, 999.0, 1000.0, 4000.0, 12_000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz, scale), scale), hz, atol=1e-6)


@pytest.mark.parametrize(("scale", "norm"), [("htk", None), ("slaney", "slaney")])
def test_filter_bank_matches_librosa(scale: str, norm: str | None) -> None:
    ours = mel_filter_bank(24_000, 2048, 128, 0.0, 12_000.0, scale, norm)
    ref = librosa.filters.mel(sr=24_000, n_fft=2048, n_mels=128, fmin=0.0, fmax=12_000.0, htk=scale == "htk", norm=norm)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


def test_muq_front_end_matches_the_torchaudio_definition() -> None:
    """torchaudio.transforms.MelSpectrogram(24000, n_fft=2048, hop_length=240, n_mels=128) then
    AmplitudeToDB() is, term by term, librosa's STFT power -> HTK mel (norm None) -> power_to_db(amin=1e-10)."""
    x = _music_like(10.0, 24_000)
    ours = LogMelSpectrogram(24_000, 2048, 240, 128)(x)[0]
    power = np.abs(librosa.stft(x.astype(np.float64), n_fft=2048, hop_length=240, center=True, pad_mode="reflect")) ** 2
    fbank = librosa.filters.mel(sr=24_000, n_fft=2048, n_mels=128, fmin=0.0, fmax=12_000.0, htk=True, norm=None)
    ref = librosa.power_to_db(fbank @ power, ref=1.0, amin=1e-10, top_db=None)
    assert ours.shape == ref.shape == (128, 1001)
    np.testing.assert_allclose(ours, ref, atol=2e-3)  # dB; float32 FFT against float64

    # MuQ's model input: the last frame dropped, then standardized with the published statistics.
    front = MuQFrontEnd({"stat": {"melspec_2048_mean": 6.77, "melspec_2048_std": 18.4}})(x[None])
    assert front.shape == (1, 128, 1000)
    np.testing.assert_allclose(front[0], (ref[:, :-1] - 6.77) / 18.4, atol=2e-4)


@pytest.mark.parametrize(("truncation", "fusion"), [("rand_trunc", False), ("fusion", True)])
def test_clap_front_end_matches_clap_feature_extractor(truncation: str, fusion: bool) -> None:
    from transformers import ClapFeatureExtractor

    x = _music_like(10.0, 48_000, seed=1)
    extractor = ClapFeatureExtractor(truncation=truncation, padding="repeatpad")
    ref = extractor(x, sampling_rate=48_000, return_tensors="np")["input_features"][0]  # (C, T, 64)
    ours = ClapFrontEnd({"truncation": truncation}, fusion=fusion)(x[None])[0]
    assert ours.shape == ref.shape == ((4 if fusion else 1), 1001, 64)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_log_mel_refuses_audio_shorter_than_half_a_frame() -> None:
    with pytest.raises(ValueError, match="expected"):
        LogMelSpectrogram(24_000, 2048, 240, 128)(np.zeros(100, np.float32))
