"""Downmix, resampling (soxr and the scipy fallback) and the fixed-window policy."""

from __future__ import annotations

import numpy as np
import pytest

from encore.audio.resample import resample, split_windows, to_encoder_input, to_mono


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def test_to_mono_averages_channels():
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5]).astype(np.float32)
    mono = to_mono(stereo)
    assert mono.shape == (10,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, 0.25)
    np.testing.assert_array_equal(to_mono(stereo[0]), stereo[0])  # already mono: unchanged
    with pytest.raises(ValueError):
        to_mono(np.zeros((1, 2, 3)))


@pytest.mark.parametrize("use_soxr", [True, False])
@pytest.mark.parametrize(("orig", "target"), [(44_100, 22_050), (48_000, 24_000), (22_050, 48_000)])
def test_resample_keeps_frequency_and_length(signals, use_soxr, orig, target):
    x = signals.sine(1000, 2.0, orig)[:, 0]
    y = resample(x, orig, target, use_soxr=use_soxr)
    assert y.dtype == np.float32
    assert abs(len(y) - round(len(x) * target / orig)) <= 1
    assert _peak_hz(y, target) == pytest.approx(1000, abs=1.0)
    assert np.abs(y[1000:-1000]).max() == pytest.approx(0.3, abs=0.01)  # no gain change


def test_resample_removes_content_above_the_new_nyquist(signals):
    # 15 kHz cannot exist at 22.05 kHz: it must be filtered out, not folded back to 7.05 kHz.
    x = signals.sine(15_000, 1.0, 44_100)[:, 0]
    y = resample(x, 44_100, 22_050)
    assert np.sqrt(np.mean(y**2)) < 0.01


def test_to_encoder_input_downmixes_then_resamples(signals):
    stereo = signals.sine(440, 1.0, 44_100, channels=2).T
    y = to_encoder_input(stereo, 44_100, 22_050)
    assert y.shape == (22_050,)
    assert np.abs(y[500:-500]).max() == pytest.approx((0.3 + 0.15) / 2, abs=0.01)


def test_windows_full_partial_and_short():
    rate = 100
    ramp = np.arange(1, 2551, dtype=np.float32)  # 25.5 s at 100 Hz, no zeros so padding is visible
    w = split_windows(ramp, rate, 10.0)
    # Two full windows and a 5.5 s tail (>= half a window): kept and zero-padded.
    assert w.frames.shape == (3, 1000) and w.lengths.tolist() == [1000, 1000, 550]
    np.testing.assert_array_equal(w.frames[2, :550], ramp[2000:])
    assert not w.frames[2, 550:].any()
    # A 4.9 s tail is below half a window: dropped.
    assert split_windows(ramp[:2490], rate, 10.0).lengths.tolist() == [1000, 1000]
    # min_last_fraction=0 keeps any tail; 1.0 keeps none.
    assert len(split_windows(ramp[:2001], rate, 10.0, min_last_fraction=0.0)) == 3
    assert len(split_windows(ramp, rate, 10.0, min_last_fraction=1.0)) == 2
    # Shorter than one window: exactly one padded window, whatever the fraction.
    short = split_windows(ramp[:120], rate, 10.0)
    assert short.frames.shape == (1, 1000) and short.lengths.tolist() == [120]
    exact = split_windows(ramp[:1000], rate, 10.0)
    assert exact.lengths.tolist() == [1000]


def test_windows_with_hop_and_determinism():
    x = np.random.default_rng(1).standard_normal(3000).astype(np.float32)
    a = split_windows(x, 100, 10.0, hop_seconds=5.0)
    assert a.lengths.tolist() == [1000] * 5  # starts 0, 500, ..., 2000
    np.testing.assert_array_equal(a.frames[1], x[500:1500])
    b = split_windows(x, 100, 10.0, hop_seconds=5.0)
    np.testing.assert_array_equal(a.frames, b.frames)
    with pytest.raises(ValueError):
        split_windows(np.zeros(0, np.float32), 100, 10.0)
