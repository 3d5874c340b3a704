"""Decode uploaded audio bytes into float32 samples, refusing bad input with stable error codes.

soundfile (libsndfile) handles WAV/FLAC/AIFF/OGG/Opus/MP3; PyAV (bundled FFmpeg) handles AAC/M4A and the rest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf

from encore.errors import EncoreError

# Limits. 6 channels covers mono, stereo and 5.1 music mixes; 7.1 (8) and more are film or stem layouts
# (or crafted files), refused as issue 8 asks.
DEFAULT_MAX_CHANNELS = 6
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
# Hard ceiling on decoded samples (all channels) whatever max_seconds says: 2**28 float32 = 1 GiB.
# It is what stops a decompression bomb (hours of FLAC silence compress to almost nothing).
MAX_TOTAL_SAMPLES = 2**28
# Lossless audio never compresses below ~1 byte per 4 samples (FLAC of music: ~1 sample per byte). A header
# that declares more samples per byte than this is a lie or a decompression bomb (FLAC silence: ~270).
MAX_LOSSLESS_SAMPLES_PER_BYTE = 64
BOMB_MIN_SAMPLES = 2**23  # below ~95 s of 44.1 kHz stereo a high ratio is just a short silent file
# Below this RMS (about -100 dBFS) a clip carries nothing an encoder can use.
SILENCE_RMS = 1e-5
# Shorter uploads are refused (too_short): below a second no encoder hears a rhythm or a timbre, and such
# clips' pooled features sat far outside every catalog (MusiCNN's 3 s patches pad a 1-3 s clip with silence).
MIN_AUDIO_SECONDS = 1.0
_BLOCK_FRAMES = 65_536

ERROR_CODES = (
    "empty_file",
    "not_audio",
    "corrupt",
    "unsupported_codec",
    "zero_length",
    "too_short",
    "silent",
    "non_finite",
    "too_many_channels",
    "bad_sample_rate",
)


class AudioError(EncoreError):
    """A refused input: `code` is stable (one of ERROR_CODES), `message` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # (channels, frames) float32, in [-1, 1] for integer sources
    sample_rate: int
    duration_seconds: float  # of the whole source (header estimate when truncated)
    seconds_used: float  # what `samples` holds
    truncated: bool  # True when max_seconds (or the hard ceiling) cut the decode short

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])


def decode_audio(data: bytes, *, max_seconds: float | None, max_channels: int = DEFAULT_MAX_CHANNELS) -> DecodedAudio:
    """Decode at most `max_seconds` (None: the whole file, up to MAX_TOTAL_SAMPLES) of `data`."""
    if not data:
        raise AudioError("empty_file", "the file is empty (0 bytes)")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    _check_wav_header(data)  # a RIFF/WAVE header's claims, before either decoder reads it (others: no-op)
    try:
        sf_file = sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError:
        sf_file = None
    if sf_file is not None:
        with sf_file:
            # libsndfile stops an MP3 without a Xing/Info header at its (often short) length estimate and
            # loses the rest silently; FFmpeg decodes every frame.
            if sf_file.format != "MP3":
                return _checked(_decode_soundfile(sf_file, max_seconds, max_channels, len(data)))
    return _checked(_decode_pyav(data, max_seconds, max_channels))


def _check_format(sample_rate: int, channels: int, max_channels: int) -> None:
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            "bad_sample_rate",
            f"sample rate {sample_rate} Hz is outside the accepted {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz",
        )
    if channels < 1:
        raise AudioError("corrupt", f"the header declares {channels} channels")
    if channels > max_channels:
        raise AudioError("too_many_channels", f"{channels} channels; at most {max_channels} are accepted")


def _frame_limit(sample_rate: int, channels: int, max_seconds: float | None) -> int:
    limit = MAX_TOTAL_SAMPLES // channels
    if max_seconds is not None:
        limit = min(limit, max(1, int(round(max_seconds * sample_rate))))
    return limit


def _check_complete(declared_seconds: float, decoded_seconds: float) -> None:
    """A header that declares much more audio than the stream holds means a cut (partial) upload."""
    if declared_seconds - decoded_seconds > max(0.02 * declared_seconds, 0.25):
        raise AudioError(
            "corrupt",
            f"the file is cut short: its header declares {declared_seconds:.1f} s "
            f"but only {decoded_seconds:.1f} s of audio is present",
        )


def _decode_soundfile(f: sf.SoundFile, max_seconds: float | None, max_channels: int, n_bytes: int) -> DecodedAudio:
    _check_format(f.samplerate, f.channels, max_channels)
    declared_samples = max(int(f.frames), 0) * f.channels
    bomb_limit = max(MAX_LOSSLESS_SAMPLES_PER_BYTE * n_bytes, BOMB_MIN_SAMPLES)
    if f.format not in _LOSSY_FORMATS and declared_samples > bomb_limit:
        raise AudioError(
            "corrupt",
            f"the {f.format} header declares {declared_samples / f.samplerate / f.channels:.0f} s of audio in only "
            f"{n_bytes} bytes (more than {MAX_LOSSLESS_SAMPLES_PER_BYTE} samples per byte, which no lossless "
            "recording reaches): refused as a false header or a decompression bomb",
        )
    limit = _frame_limit(f.samplerate, f.channels, max_seconds)
    # Read in blocks and never preallocate from the header: its frame count can be a lie.
    blocks: list[np.ndarray] = []
    n_read = 0
    try:
        while n_read < limit:
            block = f.read(min(_BLOCK_FRAMES, limit - n_read), dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            blocks.append(block)
            n_read += len(block)
    except sf.LibsndfileError as exc:
        raise AudioError("corrupt", f"the {f.format} stream is damaged or cut short ({exc})") from exc
    truncated = n_read >= limit and _has_more(f)
    if n_read == 0 and f.format == "OGG" and f.frames == 0:
        # libsndfile takes an OGG's length from its last page: none readable means the file was cut.
        raise AudioError("corrupt", "the OGG stream is cut short (its final page is missing)")
    declared = max(int(f.frames), 0)
    if not truncated:
        _check_complete(declared / f.samplerate, n_read / f.samplerate)
    samples = np.concatenate(blocks).T if blocks else np.zeros((f.channels, 0), np.float32)
    total = max(declared, n_read) if truncated else n_read
    return DecodedAudio(
        samples=np.ascontiguousarray(samples),
        sample_rate=int(f.samplerate),
        duration_seconds=total / f.samplerate,
        seconds_used=n_read / f.samplerate,
        truncated=truncated,
    )


def _check_wav_header(data: bytes) -> None:
    """A RIFF/WAVE header whose claims the file contradicts: a data chunk declaring more bytes than the file holds
    (a cut upload or a false header), or a PCM/float fmt chunk whose frame size is not channels x sample bytes.

    libsndfile silently clamps the data claim to the file size, and its answer to a false fmt chunk varies with
    the environment (it may refuse, and FFmpeg then read the false channel count), so both are read here.
    0 and 0xFFFFFFFF are the "length unknown" values streaming writers use, and are let through.
    """
    if not (data.startswith(b"RIFF") and data[8:12] == b"WAVE"):
        return
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"fmt " and size >= 16:
            _check_wav_fmt(data[offset + 8 : offset + 24])
        if chunk == b"data":
            present = len(data) - (offset + 8)
            if size not in (0, 0xFFFFFFFF) and size - present > max(0.01 * size, 4096):
                raise AudioError(
                    "corrupt",
                    f"the WAV header declares {size} bytes of audio but the file holds {present}: "
                    "the upload is cut short or its header is false",
                )
            return
        offset += 8 + size + (size & 1)


_PCM_TAGS = (1, 3, 0xFFFE)  # integer PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE: fixed bytes per sample


def _check_wav_fmt(fmt: bytes) -> None:
    """A PCM fmt chunk whose frame size is not channels x bytes per sample is a false header. The decoders' answer to
    one (say 65535 channels patched into a stereo file) was not stable between runs: libsndfile refused it or not,
    and FFmpeg then read the channel count; this one is."""
    tag, channels = int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little")
    block_align, bits = int.from_bytes(fmt[12:14], "little"), int.from_bytes(fmt[14:16], "little")
    if tag in _PCM_TAGS and block_align != channels * ((bits + 7) // 8):
        raise AudioError(
            "corrupt",
            f"the WAV header is inconsistent: {channels} channels of {bits}-bit samples in {block_align}-byte frames",
        )


_LOSSY_FORMATS = ("OGG", "MP3", "MPEG")  # Opus at low bitrates legitimately packs >100 samples per byte


def _has_more(f: sf.SoundFile) -> bool:
    try:
        return len(f.read(1, dtype="float32")) > 0
    except sf.LibsndfileError:  # damage past the part we keep does not matter
        return True


# Container signatures: a file that starts like audio but will not open is corrupt, not "not audio".
_SIGNATURES = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b"caff", b"wvpk", b"MThd")


def _looks_like_audio(data: bytes) -> bool:
    if data.startswith(_SIGNATURES) or data[4:8] == b"ftyp":
        return True
    # MPEG audio / ADTS frame sync: 11 set bits.
    return len(data) >= 2 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0


def _decode_pyav(data: bytes, max_seconds: float | None, max_channels: int) -> DecodedAudio:
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if _looks_like_audio(data):
            message = "the file looks like audio but cannot be opened (damaged or cut short)"
            raise AudioError("corrupt", message) from exc
        raise AudioError("not_audio", "the file is not a recognised audio format") from exc
    with container:
        if not container.streams.audio:
            raise AudioError("not_audio", f"the {container.format.name} file holds no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context
        if codec is None:
            message = f"no decoder for the audio codec in this {container.format.name} file"
            raise AudioError("unsupported_codec", message)
        sample_rate, channels = int(codec.sample_rate), int(codec.layout.nb_channels)
        _check_format(sample_rate, channels, max_channels)
        limit = _frame_limit(sample_rate, channels, max_seconds)
        # One resampler normalizes every sample format (s16, s32p, flt, ...) to planar float32.
        resampler = av.AudioResampler(format="fltp", layout=codec.layout, rate=sample_rate)
        blocks: list[np.ndarray] = []
        n_read, truncated = 0, False
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    blocks.append(out.to_ndarray())
                    n_read += out.samples
                if n_read >= limit:  # stop decoding here: this is the decompression-bomb guard
                    truncated = True
                    break
        except av.error.FFmpegError as exc:
            raise AudioError("corrupt", f"the audio stream is damaged ({exc})") from exc
        declared_seconds = float(container.duration) / av.time_base if container.duration else 0.0
        exact_length = _declares_exact_length(container.format.name, data)
    samples = np.concatenate(blocks, axis=1)[:, :limit] if blocks else np.zeros((channels, 0), np.float32)
    used = samples.shape[1] / sample_rate
    if exact_length and not truncated:
        _check_complete(declared_seconds, used)
    return DecodedAudio(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=sample_rate,
        duration_seconds=max(declared_seconds, used) if truncated else used,
        seconds_used=used,
        truncated=truncated,
    )


def _declares_exact_length(format_name: str, data: bytes) -> bool:
    """True when FFmpeg's duration comes from the header, not from a bitrate-times-size estimate."""
    if "mp4" in format_name or "mov" in format_name:
        return True  # the moov atom holds every sample's timing
    if format_name == "mp3":
        start = 0
        if data.startswith(b"ID3") and len(data) >= 10:  # skip the ID3v2 tag (syncsafe 28-bit size)
            start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
        head = data[start : start + 4096]
        return any(tag in head for tag in (b"Xing", b"Info", b"VBRI"))
    return False


def _checked(decoded: DecodedAudio) -> DecodedAudio:
    samples = decoded.samples
    if samples.shape[1] == 0:
        raise AudioError("zero_length", "the file holds no audio samples")
    flat = samples.reshape(-1)
    energy = float(np.dot(flat, flat))  # one pass, no temporary copy of a possibly large array
    if not np.isfinite(energy) and not np.isfinite(flat).all():
        raise AudioError("non_finite", "the audio contains NaN or infinite samples")
    rms = float(np.sqrt(energy / flat.size))
    if rms < SILENCE_RMS:
        raise AudioError("silent", f"the audio is silent (RMS {rms:.2e} over the decoded part)")
    return decoded
