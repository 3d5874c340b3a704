"""MfccEncoder: shape, determinism, features that mean what they say, real clips, and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from encore.audio.decode import decode_audio
from encore.audio.encoder import AudioEncoder, EncoderUnavailable, get_encoder
from encore.audio.mfcc import MfccEncoder

RATE = MfccEncoder.sample_rate


@pytest.fixture(scope="module")
def encoder() -> MfccEncoder:
    return MfccEncoder()


def _feature(encoder: MfccEncoder, vector: np.ndarray, name: str) -> float:
    return float(vector[encoder.feature_names().index(name)])


def test_shape_dim_and_description(encoder, signals):
    assert encoder.dim == 264 == len(encoder.feature_names()) == len(set(encoder.feature_names()))
    out = encoder.encode(signals.sine(440, 3.0, RATE)[:, 0])
    assert out.shape == (264,) and out.dtype == np.float32 and np.isfinite(out).all()
    info = encoder.describe()
    assert info["backend"] == "mfcc" and info["sample_rate"] == RATE and info["dim"] == 264
    assert info["n_layers"] == 1 and info["window_seconds"] == 10.0 and info["pooling"]
    assert isinstance(get_encoder("mfcc"), AudioEncoder)


def test_short_and_tiny_clips_are_finite(encoder):
    rng = np.random.default_rng(0)
    for n in (10, 300, 5000):  # shorter than one FFT frame, a few frames, a fraction of a second
        out = encoder.encode((0.1 * rng.standard_normal(n)).astype(np.float32))
        assert out.shape == (264,) and np.isfinite(out).all()


def test_features_follow_the_signal(encoder, signals):
    low = encoder.encode(signals.sine(200, 3.0, RATE)[:, 0])
    high = encoder.encode(signals.sine(4000, 3.0, RATE)[:, 0])
    assert _feature(encoder, high, "centroid_mean") > 5 * _feature(encoder, low, "centroid_mean")
    assert _feature(encoder, high, "zcr_mean") > 5 * _feature(encoder, low, "zcr_mean")
    quiet = encoder.encode(signals.sine(200, 3.0, RATE, amp=0.03)[:, 0])
    assert _feature(encoder, low, "log_rms_mean") - _feature(encoder, quiet, "log_rms_mean") == pytest.approx(
        1.0, abs=0.01
    )
    noise = encoder.encode((0.1 * np.random.default_rng(0).standard_normal(3 * RATE)).astype(np.float32))
    assert _feature(encoder, noise, "flatness_mean") > 10 * _feature(encoder, low, "flatness_mean")


@pytest.mark.parametrize("bpm", [90, 128])
def test_tempo_of_a_click_track(encoder, bpm):
    x = np.zeros(20 * RATE, np.float32)
    click = np.hanning(200).astype(np.float32)
    for start in np.arange(0, len(x) - 200, 60 / bpm * RATE).astype(int):
        x[start : start + 200] += click
    out = encoder.encode(x)
    assert 120 * 2 ** _feature(encoder, out, "tempo_log2") == pytest.approx(bpm, rel=0.04)
    assert _feature(encoder, out, "pulse") > 0.5


def test_real_clips_deterministic_and_distinct(encoder, audio_dir):
    def encode(name: str) -> np.ndarray:
        return encoder.encode_decoded(decode_audio((audio_dir / name).read_bytes(), max_seconds=60))

    waltz_a = encode("librosa_sweetwaltz.ogg")
    waltz_b = encode("librosa_sweetwaltz.ogg")
    hiphop = encode("essentia_hiphop.mp3")
    country = encode("gtzan_country.00000.wav")
    np.testing.assert_array_equal(waltz_a, waltz_b)
    assert np.isfinite(waltz_a).all() and np.isfinite(hiphop).all()
    # Relative distance: clearly different music is far apart on every pair.
    for x, y in [(waltz_a, hiphop), (waltz_a, country), (hiphop, country)]:
        assert np.linalg.norm(x - y) > 0.1 * min(np.linalg.norm(x), np.linalg.norm(y))


def test_registry_names_what_is_missing(tmp_path):
    with pytest.raises(EncoderUnavailable, match="unknown encoder 'wav2vec'.*mfcc"):
        get_encoder("wav2vec")
    with pytest.raises(EncoderUnavailable, match=f"{tmp_path}/muq.*model.safetensors"):
        get_encoder("muq", weights_dir=tmp_path)
    with pytest.raises(EncoderUnavailable, match="clap"):
        get_encoder("clap")
