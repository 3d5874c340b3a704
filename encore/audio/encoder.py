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


def _build_mfcc(weights_dir: Path | None) -> AudioEncoder:
    from encore.audio.mfcc import MfccEncoder  # deferred: mfcc imports this module

    return MfccEncoder()


def _needs_weights(name: str, folder: str, package: str) -> Callable[[Path | None], AudioEncoder]:
    def build(weights_dir: Path | None) -> AudioEncoder:
        where = f"{weights_dir}/{folder}" if weights_dir else f"<weights_dir>/{folder} (no weights_dir given)"
        raise EncoderUnavailable(
            f"encoder '{name}' is not available in this build: it needs {package} and a local folder {where} "
            "holding config.json + model.safetensors"
        )

    return build


# name -> factory. MuQ / MuQ-MuLan / CLAP backends replace these placeholders when they land.
ENCODERS: dict[str, Callable[[Path | None], AudioEncoder]] = {
    "mfcc": _build_mfcc,
    "muq": _needs_weights("muq", "muq", "torch"),
    "muq-mulan": _needs_weights("muq-mulan", "muq-mulan", "torch"),
    "clap": _needs_weights("clap", "clap", "torch + transformers"),
}


def get_encoder(name: str, weights_dir: Path | None = None) -> AudioEncoder:
    factory = ENCODERS.get(name)
    if factory is None:
        raise EncoderUnavailable(f"unknown encoder '{name}'; known: {', '.join(sorted(ENCODERS))}")
    return factory(Path(weights_dir) if weights_dir is not None else None)
