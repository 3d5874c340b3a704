"""The audio encoder contract (waveform -> (n_layers, dim) after time pooling) and the backend registry.

Weights never come from a hub at run time: a weighted backend is enabled by its folder under `weights_dir`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from encore.audio.decode import DecodedAudio
from encore.audio.resample import to_encoder_input
from encore.errors import EncoreError

# How a weighted encoder runs: auto (the ONNX fp32 export when current, else torch), or one of the others.
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
# The encoder of `make run`, the compose stack and the bootstrap, unless ENCORE_ENCODER says otherwise: the one
# pretrained music encoder whose real weights install here (`python -m encore.audio.musicnn_weights`).
DEFAULT_ENCODER = "musicnn"


# Tag head -> its top tags, most probable first (MusiCNN: {"mtt": [...], "msd": [...]}).
Tags = dict[str, list[str]]
TOP_TAGS = 5


def format_tags(tags: Tags) -> str:
    """The store's form of Tags: "head:tag" items joined by commas, heads in sorted order ("" for none)."""
    return ",".join(f"{head}:{tag}" for head in sorted(tags) for tag in tags[head])


def parse_tags(text: str | None) -> Tags:
    """Inverse of format_tags; None or "" (a track stored without tags) gives {}."""
    tags: Tags = {}
    for item in filter(None, (text or "").split(",")):
        head, _, tag = item.partition(":")
        tags.setdefault(head, []).append(tag)
    return tags


class EncoderUnavailable(EncoreError):
    """The named backend cannot be built here; the message names what is missing."""


class AudioEncoder(ABC):
    name: str
    revision: str
    sample_rate: int
    window_seconds: float
    window_policy: str
    pooling: str
    n_layers: int
    dim: int

    @abstractmethod
    def encode(self, mono: np.ndarray) -> np.ndarray:
        """Mono float32 at `sample_rate` -> (n_layers, dim) float32."""

    def encode_decoded(self, decoded: DecodedAudio) -> np.ndarray:
        return self.encode(to_encoder_input(decoded.samples, decoded.sample_rate, self.sample_rate))

    def encode_with_tags(self, decoded: DecodedAudio) -> tuple[np.ndarray, Tags]:
        """(n_layers, dim) and the encoder's top tags per tag head ({} for an encoder without tags)."""
        return self.encode_decoded(decoded), {}

    def params(self) -> dict[str, Any]:
        """Backend-specific settings that change the output; part of describe()."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What every stored vector carries, and what codebooks are checked against."""
        return {
            "backend": self.name,
            "revision": self.revision,
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "window_policy": self.window_policy,
            "pooling": self.pooling,
            "n_layers": self.n_layers,
            "dim": self.dim,
            "params": self.params(),
        }


def _build_mfcc(weights_dir: Path | None, runtime: str = "auto", threads: int | None = None) -> AudioEncoder:
    from encore.audio.mfcc import MfccEncoder  # deferred: mfcc imports this module

    return MfccEncoder()  # numpy only: no weights, one runtime


def _build_musicnn(weights_dir: Path | None, runtime: str = "auto", threads: int | None = None) -> AudioEncoder:
    from encore.audio.musicnn_encoder import build_musicnn  # deferred: it imports this module

    return build_musicnn(weights_dir, runtime, threads)


def _pretrained(builder: str) -> Callable[..., AudioEncoder]:
    def build(weights_dir: Path | None, runtime: str = "auto", threads: int | None = None) -> AudioEncoder:
        from encore.audio import pretrained  # deferred: pretrained imports this module

        return getattr(pretrained, builder)(weights_dir, runtime, threads)

    return build


# name -> factory(weights_dir, runtime, threads). Weighted backends raise EncoderUnavailable naming what is missing.
ENCODERS: dict[str, Callable[..., AudioEncoder]] = {
    "mfcc": _build_mfcc,
    "muq": _pretrained("build_muq"),
    "muq-mulan": _pretrained("build_mulan"),
    "clap": _pretrained("build_clap"),
    "musicnn": _build_musicnn,
}


def get_encoder(
    name: str, weights_dir: Path | None = None, runtime: str = "auto", threads: int | None = None
) -> AudioEncoder:
    """Build backend `name`. runtime: "auto" (ONNX fp32 when exported, else torch), "torch", "onnx",
    "onnx-int8"; threads: ONNX Runtime intra-op threads (None: its default)."""
    factory = ENCODERS.get(name)
    if factory is None:
        raise EncoderUnavailable(f"unknown encoder '{name}'; known: {', '.join(sorted(ENCODERS))}")
    if runtime not in RUNTIMES:
        raise EncoderUnavailable(f"unknown encoder runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    return factory(Path(weights_dir) if weights_dir is not None else None, runtime, threads)
