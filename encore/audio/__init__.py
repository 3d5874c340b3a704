"""Audio content: decode uploads, resample, window, encode to pooled layer vectors, tokenize."""

from encore.audio.codebooks import CodebookMismatch, Codebooks, content_revision
from encore.audio.decode import AudioError, DecodedAudio, decode_audio
from encore.audio.encoder import AudioEncoder, EncoderUnavailable, get_encoder
from encore.audio.extract import extract_catalog, load_catalog
from encore.audio.mfcc import MfccEncoder
from encore.audio.musicnn_encoder import MusicnnAnalysis, MusicnnEncoder
from encore.audio.resample import Windows, resample, split_windows, to_encoder_input, to_mono
from encore.audio.transform import ContentTransform

__all__ = [
    "AudioEncoder",
    "AudioError",
    "CodebookMismatch",
    "Codebooks",
    "ContentTransform",
    "DecodedAudio",
    "EncoderUnavailable",
    "MfccEncoder",
    "MusicnnAnalysis",
    "MusicnnEncoder",
    "Windows",
    "decode_audio",
    "extract_catalog",
    "content_revision",
    "get_encoder",
    "load_catalog",
    "resample",
    "split_windows",
    "to_encoder_input",
    "to_mono",
]
