"""The pretrained encoders (MuQ, MuQ-MuLan, CLAP): windows -> numpy log-mel -> tower -> pooled over windows.

Each is built from its local folder (encore.audio.weights) on torch or on an ONNX export; the torch modules
live in muq.py, mulan.py and clap.py and are imported only for the torch runtime and for export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from encore.audio.encoder import AudioEncoder, EncoderUnavailable
from encore.audio.melspec import LogMelSpectrogram
from encore.audio.resample import DEFAULT_MIN_LAST_FRACTION, split_windows
from encore.audio.towers import OnnxTower, TorchTower, Tower
from encore.audio.weights import (
    WEIGHTS_FILE,
    WeightsFolder,
    choose_runtime,
    open_folder,
    read_json,
    require_modules,
)

WINDOW_SECONDS = 10.0
MULAN_MUQ_CONFIG = "muq_config.json"  # the MuQ config.json that MuQ-MuLan's audio tower was built from
CLAP_PREPROCESSOR = "preprocessor_config.json"  # optional: the published feature-extractor settings
# Buffers recomputed from the config; a checkpoint may or may not carry them.
_DERIVED_BUFFERS = ("num_batches_tracked", "inv_freq", "position_ids")


class MuQFrontEnd:
    """MuQ's input: torchaudio-style log-mel (24 kHz, n_fft 2048, hop 240, HTK, no norm) in dB, last frame
    dropped (as the published model does), standardized with the training-set mean and std from config.json."""

    sample_rate = 24_000

    def __init__(self, config: dict[str, Any]) -> None:
        stat = config.get("stat") or {}
        self.mean = float(stat.get("melspec_2048_mean", 6.768444971712967))
        self.std = float(stat.get("melspec_2048_std", 18.417922652295623))
        hop, n_mels = int(config.get("hop_length", 240)), int(config.get("n_mels", 128))
        self.mel = LogMelSpectrogram(self.sample_rate, 2048, hop, n_mels)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(B, samples) -> (B, n_mels, frames) float32."""
        return ((self.mel(frames)[..., :-1] - self.mean) / self.std).astype(np.float32)


class ClapFrontEnd:
    """CLAP's input as its feature extractor builds it for a clip of exactly max_length_s: log-mel in dB,
    (B, 1, T, n_mels), four identical channels for fusion models. "fusion" truncation uses HTK filters,
    every other setting Slaney's (the feature extractor's rule)."""

    def __init__(self, preprocessor: dict[str, Any], fusion: bool) -> None:
        truncation = preprocessor.get("truncation", "fusion" if fusion else "rand_trunc")
        slaney = truncation != "fusion"
        self.sample_rate = int(preprocessor.get("sampling_rate", 48_000))
        self.channels = 4 if fusion else 1
        self.mel = LogMelSpectrogram(
            self.sample_rate,
            int(preprocessor.get("fft_window_size", 1024)),
            int(preprocessor.get("hop_length", 480)),
            int(preprocessor.get("feature_size", 64)),
            f_min=float(preprocessor.get("frequency_min", 0.0)),
            f_max=float(preprocessor.get("frequency_max", 14_000.0)),
            scale="slaney" if slaney else "htk",
            norm="slaney" if slaney else None,
        )

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        mel = self.mel(frames).transpose(0, 2, 1)[:, None]  # (B, 1, T, n_mels)
        return np.ascontiguousarray(np.repeat(mel, self.channels, axis=1))


class PretrainedEncoder(AudioEncoder):
    """10 s windows (the last filled by repeating the track), batches of windows through the tower, then the
    mean over windows; `renormalize` L2-normalizes that mean (joint-embedding models: MuQ-MuLan, CLAP)."""

    window_seconds = WINDOW_SECONDS
    window_policy = (
        f"back-to-back {WINDOW_SECONDS:g} s windows; last kept if >= {DEFAULT_MIN_LAST_FRACTION} of a window, "
        "its tail (and a shorter clip) filled by repeating the track from its start"
    )

    def __init__(
        self,
        *,
        name: str,
        revision: str,
        front_end: Callable[[np.ndarray], np.ndarray],
        sample_rate: int,
        tower: Tower,
        n_layers: int,
        dim: int,
        pooling: str,
        params: dict[str, Any],
        renormalize: bool,
        batch_windows: int = 4,
    ) -> None:
        self.name, self.revision, self.sample_rate = name, revision, sample_rate
        self.front_end, self.tower = front_end, tower
        self.n_layers, self.dim, self.pooling = n_layers, dim, pooling
        self._params, self.renormalize, self.batch_windows = params, renormalize, batch_windows

    @property
    def runtime(self) -> str:
        return self.tower.runtime

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def encode_windows(self, frames: np.ndarray) -> np.ndarray:
        """(W, window samples) -> (W, n_layers, dim); front end and tower run `batch_windows` at a time so a
        long track never holds every window's spectrogram frames at once."""
        parts = [
            self.tower(self.front_end(frames[i : i + self.batch_windows]))
            for i in range(0, len(frames), self.batch_windows)
        ]
        return np.concatenate(parts).astype(np.float32)

    def encode(self, mono: np.ndarray) -> np.ndarray:
        windows = split_windows(mono, self.sample_rate, self.window_seconds, fill="repeat")
        pooled = self.encode_windows(windows.frames).mean(axis=0)  # (n_layers, dim)
        if self.renormalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled.astype(np.float32).reshape(-1)  # (n_layers * dim,): equal widths, row-major


# --- building: folder -> torch module (torch runtime, export) or ONNX session -------------------------------


def load_torch_module(folder: WeightsFolder) -> Any:
    """The encoder's torch module with the folder's weights, in eval mode (published or our key names)."""
    require_modules(folder.encoder, "torch", "transformers")
    from safetensors.torch import load_file

    if folder.encoder == "muq":
        from encore.audio.muq import MuQ, MuQConfig, convert_muq_state_dict

        module, convert = MuQ(MuQConfig.from_dict(folder.config)), convert_muq_state_dict
    elif folder.encoder == "muq-mulan":
        from encore.audio.mulan import MuLanAudio, MuLanAudioConfig, convert_mulan_state_dict
        from encore.audio.muq import MuQConfig

        muq_config = MuQConfig.from_dict(read_json(folder.file(MULAN_MUQ_CONFIG)))
        module, convert = MuLanAudio(MuLanAudioConfig.from_dict(folder.config), muq_config), convert_mulan_state_dict
    elif folder.encoder == "clap":
        from encore.audio.clap import ClapAudio, clap_audio_config, convert_clap_state_dict

        tower = ClapAudio(clap_audio_config(folder.config))
        _load_weights(tower.model, convert_clap_state_dict(load_file(str(folder.file(WEIGHTS_FILE)))), folder)
        return tower.eval()
    else:
        raise EncoderUnavailable(f"no torch module for encoder '{folder.encoder}'")
    _load_weights(module, convert(load_file(str(folder.file(WEIGHTS_FILE)))), folder)
    return module.eval()


def _load_weights(module: Any, state: dict[str, Any], folder: WeightsFolder) -> None:
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(_DERIVED_BUFFERS)]
    unexpected = [k for k in result.unexpected_keys if not k.endswith(_DERIVED_BUFFERS)]
    if missing or unexpected:
        raise EncoderUnavailable(
            f"encoder '{folder.encoder}': {folder.file(WEIGHTS_FILE)} does not fit {folder.file('config.json')} "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )


def _tower(folder: WeightsFolder, runtime: str, precision: str, threads: int | None) -> Tower:
    try:
        if runtime == "onnx":
            return OnnxTower(folder.onnx_path(precision), threads)
        return TorchTower(load_torch_module(folder))
    except EncoderUnavailable:
        raise
    except Exception as exc:  # a truncated or corrupt file: safetensors, ONNX Runtime and torch errors differ
        raise EncoderUnavailable(
            f"encoder '{folder.encoder}' could not be loaded from {folder.path} on {runtime} "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def build_muq(weights_dir: Path | None, runtime: str = "auto", threads: int | None = None) -> PretrainedEncoder:
    folder = open_folder(weights_dir, "muq")
    runtime, precision = choose_runtime(folder, runtime)
    depth = int(folder.config.get("encoder_depth", 12))
    return PretrainedEncoder(
        name="muq",
        revision=folder.revision,
        front_end=MuQFrontEnd(folder.config),
        sample_rate=MuQFrontEnd.sample_rate,
        tower=_tower(folder, runtime, precision, threads),
        n_layers=depth,
        dim=int(folder.config.get("encoder_dim", 1024)),
        pooling="conformer layers 1..N, each mean-pooled over time, then mean over windows",
        params={"layers": list(range(1, depth + 1)), "precision": precision},
        renormalize=False,
    )


def build_mulan(weights_dir: Path | None, runtime: str = "auto", threads: int | None = None) -> PretrainedEncoder:
    folder = open_folder(weights_dir, "muq-mulan", extra_files=(MULAN_MUQ_CONFIG,))
    runtime, precision = choose_runtime(folder, runtime)
    return PretrainedEncoder(
        name="muq-mulan",
        revision=folder.revision,
        front_end=MuQFrontEnd(read_json(folder.file(MULAN_MUQ_CONFIG))),
        sample_rate=MuQFrontEnd.sample_rate,
        tower=_tower(folder, runtime, precision, threads),
        n_layers=1,
        dim=int(folder.config.get("mulan", {}).get("dim_latent", 512)),
        pooling="audio latent per window (L2-normalized), mean over windows, renormalized",
        params={"precision": precision},
        renormalize=True,
    )


def build_clap(weights_dir: Path | None, runtime: str = "auto", threads: int | None = None) -> PretrainedEncoder:
    folder = open_folder(weights_dir, "clap")
    runtime, precision = choose_runtime(folder, runtime)
    audio_config = folder.config.get("audio_config", folder.config)
    front_end = ClapFrontEnd(read_json(folder.file(CLAP_PREPROCESSOR)), bool(audio_config.get("enable_fusion", False)))
    return PretrainedEncoder(
        name="clap",
        revision=folder.revision,
        front_end=front_end,
        sample_rate=front_end.sample_rate,
        tower=_tower(folder, runtime, precision, threads),
        n_layers=1,
        dim=int(folder.config.get("projection_dim", audio_config.get("projection_dim", 512))),
        pooling="projected audio embedding per window (L2-normalized), mean over windows, renormalized",
        params={"precision": precision, "fusion": bool(audio_config.get("enable_fusion", False))},
        renormalize=True,
    )
