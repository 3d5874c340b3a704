"""decode_audio: every format decodes with the right rate/length, every bad input gets its error code."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

from encore.audio.decode import ERROR_CODES, AudioError, decode_audio

RATE = 44_100


def _error_code(data: bytes, **kwargs) -> str:
    with pytest.raises(AudioError) as info:
        decode_audio(data, max_seconds=kwargs.pop("max_seconds", None), **kwargs)
    assert info.value.code in ERROR_CODES
    assert info.value.message  # a human sentence, not just the code
    return info.value.code


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [
        ("WAV", "PCM_16", 44_100, 2),
        ("WAV", "FLOAT", 48_000, 1),
        ("FLAC", "PCM_24", 22_050, 2),
        ("OGG", "VORBIS", 44_100, 1),
        ("OGG", "OPUS", 48_000, 2),
        ("MP3", "MPEG_LAYER_III", 44_100, 2),
        ("AIFF", "PCM_16", 32_000, 1),
    ],
)
def test_soundfile_formats_decode(signals, fmt, subtype, rate, channels):
    frames = signals.sine(440, 2.0, rate, channels)
    out = decode_audio(signals.sf_bytes(frames, rate, fmt, subtype), max_seconds=None)
    assert out.sample_rate == rate
    assert out.samples.shape[0] == channels and out.samples.dtype == np.float32
    lossy = fmt in ("OGG", "MP3")  # codec delay/padding changes the length by a few ms
    assert out.duration_seconds == pytest.approx(2.0, abs=0.06 if lossy else 1e-6)
    assert not out.truncated and out.seconds_used == pytest.approx(out.duration_seconds)
    # Amplitude survives (first channel is the 0.3 sine): not rescaled, not garbage.
    assert np.abs(out.samples[0]).max() == pytest.approx(0.3, abs=0.03)
    if channels == 2:
        assert np.abs(out.samples[1]).max() == pytest.approx(0.15, abs=0.02)


@pytest.mark.parametrize(("container", "channels"), [("mp4", 2), ("adts", 1)])
def test_aac_decodes_through_pyav(signals, container, channels):
    if not signals.has_encoder("aac"):
        pytest.skip("the FFmpeg bundled with PyAV has no AAC encoder")
    data = signals.av_bytes(signals.sine(440, 3.0, RATE, channels), RATE, container=container)
    out = decode_audio(data, max_seconds=None)
    assert (out.sample_rate, out.channels) == (RATE, channels)
    assert out.duration_seconds == pytest.approx(3.0, abs=0.1)  # AAC priming adds ~1024-2048 samples
    spectrum = np.abs(np.fft.rfft(out.samples[0]))
    assert np.fft.rfftfreq(out.samples.shape[1], 1 / RATE)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_real_clips_match_their_manifest(audio_dir, audio_manifest):
    assert len(audio_manifest) == 12
    for row in audio_manifest:
        out = decode_audio((audio_dir / row["file"]).read_bytes(), max_seconds=None)
        assert out.sample_rate == int(row["sample_rate"]), row["file"]
        assert out.channels == int(row["channels"]), row["file"]
        assert out.duration_seconds == pytest.approx(float(row["duration_s"]), abs=0.06), row["file"]
        assert np.isfinite(out.samples).all() and np.abs(out.samples).max() <= 1.0


def test_max_seconds_truncates_soundfile_and_pyav(signals):
    wav = signals.sf_bytes(signals.sine(440, 6.0, RATE, 2), RATE, "WAV", "PCM_16")
    out = decode_audio(wav, max_seconds=2.5)
    assert out.samples.shape == (2, int(2.5 * RATE))
    assert out.truncated and out.seconds_used == pytest.approx(2.5)
    assert out.duration_seconds == pytest.approx(6.0)
    # Exactly the full length is not "truncated".
    assert not decode_audio(wav, max_seconds=6.0).truncated
    if signals.has_encoder("aac"):
        m4a = signals.av_bytes(signals.sine(440, 6.0, RATE, 1), RATE)
        out = decode_audio(m4a, max_seconds=1.0)
        assert out.truncated and out.samples.shape[1] == RATE
        assert out.duration_seconds == pytest.approx(6.0, abs=0.1)


def test_a_decompression_bomb_is_refused_before_decoding(signals):
    # 20 minutes of a constant level compress to a few hundred KB of FLAC: ~270 samples per byte.
    rate = 8_000
    data = signals.sf_bytes(np.full((20 * 60 * rate, 1), 0.25, np.float32), rate, "FLAC", "PCM_16")
    assert len(data) < 1_000_000
    with pytest.raises(AudioError, match="decompression bomb") as refused:
        decode_audio(data, max_seconds=5.0)
    assert refused.value.code == "corrupt" and "1200 s of audio" in refused.value.message


def test_decode_stops_at_max_seconds_on_a_long_file(signals):
    rate = 8_000
    data = signals.sf_bytes(signals.sine(440, 60.0, rate), rate, "FLAC", "PCM_16")
    out = decode_audio(data, max_seconds=5.0)
    assert out.samples.shape == (1, 5 * rate) and out.truncated
    assert out.duration_seconds == pytest.approx(60.0)


def test_wav_header_claiming_two_billion_frames_allocates_nothing_big(signals):
    wav = bytearray(signals.sf_bytes(signals.sine(440, 0.5, RATE), RATE, "WAV", "PCM_16"))
    struct.pack_into("<I", wav, 4, 2**31 + 36)  # RIFF size
    struct.pack_into("<I", wav, 40, 2**31)  # data chunk: 2^30 16-bit frames claimed
    tracemalloc.start()
    with pytest.raises(AudioError, match="declares 2147483648 bytes of audio") as refused:
        decode_audio(bytes(wav), max_seconds=None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert refused.value.code == "corrupt"  # a false claim is refused (libsndfile alone would clamp it)
    assert peak < 20 * 2**20
    struct.pack_into("<I", wav, 40, 0xFFFFFFFF)  # "length unknown", as streaming writers put it: accepted
    assert decode_audio(bytes(wav), max_seconds=None).samples.shape == (1, int(0.5 * RATE))


def test_empty_random_and_text_inputs(tmp_path):
    assert _error_code(b"") == "empty_file"
    assert _error_code(np.random.default_rng(0).bytes(20_000)) == "not_audio"
    text = tmp_path / "notes.wav"  # a text file renamed .wav: the name must not matter
    text.write_text("these are my liner notes, not a song\n" * 50)
    assert _error_code(text.read_bytes()) == "not_audio"


@pytest.mark.parametrize("fmt", ["FLAC", "MP3"])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.03])
def test_truncated_files_are_corrupt(signals, fmt, keep):
    data = signals.sf_bytes(signals.sine(440, 4.0, RATE, 2), RATE, fmt)
    assert _error_code(data[: int(len(data) * keep)]) == "corrupt"


@pytest.mark.parametrize("keep", [0.9, 0.7, 0.3, 0.03])
def test_truncated_ogg_is_refused_or_shorter(signals, keep):
    # OGG declares no total length (it is read from the last page), so a cut stream may decode up to
    # its last whole page; what matters is that it never passes as the full clip or crashes.
    data = signals.sf_bytes(signals.sine(440, 4.0, RATE, 2), RATE, "OGG")
    try:
        out = decode_audio(data[: int(len(data) * keep)], max_seconds=None)
    except AudioError as exc:
        assert exc.code == "corrupt"
    else:
        assert out.duration_seconds < 4.0 * keep + 0.1


def test_mp3_without_xing_header_decodes_every_frame(signals):
    # libsndfile stops such a VBR MP3 at a short length estimate; the decoder must not lose the tail.
    if not signals.has_encoder("libmp3lame"):
        pytest.skip("the FFmpeg bundled with PyAV has no MP3 encoder")
    frames = signals.sine(440, 12.0, RATE)
    frames[: 6 * RATE] *= 1e-3  # a quiet first half makes the bitrate vary
    frames[6 * RATE :] += np.random.default_rng(0).normal(0, 0.2, (6 * RATE, 1)).astype(np.float32)
    data = signals.av_bytes(frames, RATE, container="mp3", codec="libmp3lame", options={"write_xing": "0"}, qscale=4)
    assert b"Xing" not in data[:4096] and b"Info" not in data[:4096]
    assert decode_audio(data, max_seconds=None).duration_seconds == pytest.approx(12.0, abs=0.1)


def test_truncated_m4a_is_corrupt(signals):
    if not signals.has_encoder("aac"):
        pytest.skip("the FFmpeg bundled with PyAV has no AAC encoder")
    data = signals.av_bytes(signals.sine(440, 2.0, RATE, 1), RATE)
    assert _error_code(data[: len(data) // 2]) == "corrupt"


def test_unknown_codec_in_a_wav_container(signals):
    wav = bytearray(signals.sf_bytes(signals.sine(440, 0.5, RATE), RATE, "WAV", "PCM_16"))
    struct.pack_into("<H", wav, 20, 0x1234)  # a format tag no decoder knows
    assert _error_code(bytes(wav)) == "unsupported_codec"


def test_zero_length_file(signals):
    assert _error_code(signals.sf_bytes(np.zeros((0, 1), np.float32), RATE, "WAV", "PCM_16")) == "zero_length"


@pytest.mark.parametrize("rate", [1, 4_000, 400_000])
def test_bad_sample_rate_from_header(signals, rate):
    wav = bytearray(signals.sf_bytes(signals.sine(440, 0.5, RATE), RATE, "WAV", "PCM_16"))
    struct.pack_into("<I", wav, 24, rate)  # sample rate
    struct.pack_into("<I", wav, 28, rate * 2)  # byte rate, kept consistent
    assert _error_code(bytes(wav)) == "bad_sample_rate"


def test_channel_limit(signals):
    nine = signals.sf_bytes(signals.sine(440, 0.2, 16_000, channels=9), 16_000, "WAV", "PCM_16")
    assert _error_code(nine) == "too_many_channels"
    assert decode_audio(nine, max_seconds=None, max_channels=16).channels == 9
    eight = signals.sf_bytes(signals.sine(440, 0.2, 16_000, channels=8), 16_000, "WAV", "PCM_16")
    assert _error_code(eight) == "too_many_channels"  # 7.1 and up: film/stem layouts, not music uploads
    six = signals.sf_bytes(signals.sine(440, 0.2, 16_000, channels=6), 16_000, "WAV", "PCM_16")
    assert decode_audio(six, max_seconds=None).channels == 6  # 5.1 mixes are accepted


def test_silent_and_non_finite_samples(signals):
    assert _error_code(signals.sf_bytes(np.zeros((RATE, 2), np.float32), RATE, "FLAC")) == "silent"
    assert _error_code(signals.sf_bytes(np.full((RATE, 1), 1e-7, np.float32), RATE, "WAV", "FLOAT")) == "silent"
    frames = signals.sine(440, 1.0, RATE)
    frames[1000] = np.nan
    assert _error_code(signals.sf_bytes(frames, RATE, "WAV", "FLOAT")) == "non_finite"
    frames[1000] = np.inf
    assert _error_code(signals.sf_bytes(frames, RATE, "WAV", "DOUBLE")) == "non_finite"
    # A quiet but real signal (-60 dBFS) is accepted.
    assert decode_audio(signals.sf_bytes(signals.sine(440, 1.0, RATE, amp=1e-3), RATE, "WAV"), max_seconds=None)


def test_invalid_max_seconds(signals):
    with pytest.raises(ValueError):
        decode_audio(signals.sf_bytes(signals.sine(440, 1.0, RATE), RATE, "WAV"), max_seconds=0)
