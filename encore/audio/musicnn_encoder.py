"""MusiCNN as an AudioEncoder: 16 kHz mono -> float32 log-mel (numpy) -> 3 s patches -> network -> track mean.

Two networks of the same architecture run: MSD_musicnn (weights/musicnn-msd) gives the layer vectors and
the 50 MSD tags, MTT_musicnn (weights/musicnn-mtt) the 50 MagnaTagATune tags. Each runs on torch
(encore.audio.musicnn) or on its ONNX export (encore.audio.musicnn_export), chosen as for the other
pretrained encoders (runtime auto | torch | onnx | onnx-int8).

Pooling rule: every output (tags, penultimate, the time-mean of each layer) is computed per 3 s patch and
averaged over the track's patches with equal weight (musicnn's own taggram mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import rfft
from scipy.signal import get_window

from encore.audio.decode import DecodedAudio
from encore.audio.encoder import TOP_TAGS, AudioEncoder, EncoderUnavailable, Tags
from encore.audio.melspec import mel_filter_bank
from encore.audio.resample import to_encoder_input
from encore.audio.stages import stage
from encore.audio.weights import WEIGHTS_FILE, WeightsFolder, check_export, open_folder, require_modules

HEADS = {"msd": "musicnn-msd", "mtt": "musicnn-mtt"}  # tag head -> weights folder
EMBEDDING_HEAD = "msd"  # the network whose layers are the content vectors (trained on the larger dataset)
OUTPUTS = ("tags", "penultimate", "pooled")  # the network's outputs, torch and ONNX alike
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
MIN_LAST_FRACTION = 0.5
# A bounded excerpt: a track longer than this many patches (60 s) is heard through that many, spread evenly from
# its first patch to its last. Two networks over a 3-minute upload took 6 s of one core with every patch (30x
# real time); the effect on the vectors and tags is measured in docs/encoders.md.
MAX_PATCHES = 20
# The tag lists name some things several ways (MTT: "no vocals", "no vocal", "no voice"); a listener reading "no
# vocals, no vocal" learns nothing from the second. A group counts once in a top-k, under its first name here, at
# the probability of its most probable member. Every name here is a tag of its head, so the query steering's tag
# vocabulary (training/export_text_encoder.py) still knows each one.
TAG_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("no vocals", "no vocal", "no voice"),
    ("vocals", "vocal", "voice", "singing"),
    ("female voice", "female", "woman", "female vocal"),
    ("male voice", "male", "man", "male vocal"),
    ("choir", "choral"),
    ("beat", "beats"),
    ("classical", "classic"),
    ("female vocalists", "female vocalist"),  # MSD
    ("chillout", "chill"),  # MSD
)
TAG_GROUP_NAME = {member: group[0] for group in TAG_SYNONYMS for member in group}


class MusicnnFrontEnd:
    """musicnn's input, log10(10000 * mel + 1) of librosa's melspectrogram (Slaney mel scale and norm, periodic
    Hann, centred frames with reflect padding: librosa's default when the models were trained), all in
    float32 (musicnn's extractor casts the mel to float16 first, which overflows on loud audio)."""

    sample_rate, n_fft, hop_length, n_mels = 16_000, 512, 256, 96
    chunk_frames = 4096  # frames per FFT batch: a long track never holds all its frames at once

    def __init__(self) -> None:
        bank = mel_filter_bank(self.sample_rate, self.n_fft, self.n_mels, 0.0, self.sample_rate / 2, "slaney", "slaney")
        self.filters = bank.T.astype(np.float32)  # (F, n_mels)
        self.window = get_window("hann", self.n_fft, fftbins=True).astype(np.float32)

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        """(n,) float32 at 16 kHz -> (1 + n // 256, 96) float32 log-mel."""
        return np.log10(np.float32(10_000) * self.power_mel(mono) + np.float32(1))

    def power_mel(self, mono: np.ndarray) -> np.ndarray:
        """(n,) float32 at 16 kHz -> (1 + n // 256, 96) float32 mel power, before the log."""
        mono = np.asarray(mono, dtype=np.float32)
        half = self.n_fft // 2
        if mono.ndim != 1 or mono.size <= half:
            raise ValueError(f"expected a 1-D signal of more than {half} samples, got shape {mono.shape}")
        frames = sliding_window_view(np.pad(mono, half, mode="reflect"), self.n_fft)[:: self.hop_length]
        mel = np.empty((len(frames), self.n_mels), np.float32)
        for start in range(0, len(frames), self.chunk_frames):
            spectrum = rfft(frames[start : start + self.chunk_frames] * self.window, axis=-1)
            mel[start : start + self.chunk_frames] = (spectrum.real**2 + spectrum.imag**2) @ self.filters
        return mel


def split_patches(mel: np.ndarray, patch_frames: int = PATCH_FRAMES) -> np.ndarray:
    """(T, n_mels) -> (P, patch_frames, n_mels): back-to-back patches from frame 0. Frames left after the
    last full patch become one more patch when they fill at least half of one; that patch, and a track
    shorter than one patch, is completed by repeating the track's frames from its start (the repeat-pad
    musicnn was trained with), never with silence."""
    n = len(mel)
    starts = list(range(0, n - patch_frames + 1, patch_frames)) or [0]
    tail = n - (starts[-1] + patch_frames)
    if tail >= MIN_LAST_FRACTION * patch_frames:
        starts.append(starts[-1] + patch_frames)
    patches = np.empty((len(starts), patch_frames, mel.shape[1]), np.float32)
    for i, start in enumerate(starts):
        chunk = mel[start : start + patch_frames]
        patches[i, : len(chunk)] = chunk
        if len(chunk) < patch_frames:
            patches[i, len(chunk) :] = np.resize(mel, (patch_frames - len(chunk), mel.shape[1]))
    return patches


def spread_patches(patches: np.ndarray, max_patches: int = MAX_PATCHES) -> np.ndarray:
    """(P, ...) -> at most max_patches of them, evenly spaced from the first to the last (all when P fits)."""
    if len(patches) <= max_patches:
        return patches
    return patches[np.round(np.linspace(0, len(patches) - 1, max_patches)).astype(int)]


@dataclass(frozen=True)
class MusicnnAnalysis:
    """One track: the layer vectors of the embedding network and both heads' tag probabilities, each the
    mean over the track's 3 s patches."""

    layers: list[np.ndarray]  # front end (561), mid end 1-3 (64 each), penultimate (200)
    layer_names: list[str]
    tags: dict[str, np.ndarray]  # head -> (50,) probabilities
    tag_names: dict[str, list[str]]
    n_patches: int

    def top_tags(self, head: str, k: int = 5) -> list[tuple[str, float]]:
        """The k most probable tags of one head, most probable first, synonyms merged (TAG_SYNONYMS)."""
        top: dict[str, float] = {}
        for i in np.argsort(-self.tags[head], kind="stable").tolist():
            name = self.tag_names[head][i]
            top.setdefault(TAG_GROUP_NAME.get(name, name), float(self.tags[head][i]))
            if len(top) == k:
                break
        return list(top.items())


class TorchNet:
    runtime = "torch"

    def __init__(self, folder: WeightsFolder) -> None:
        require_modules(folder.encoder, "torch")
        from safetensors.torch import load_file

        from encore.audio.musicnn import Musicnn, MusicnnConfig

        self.module = Musicnn(MusicnnConfig.from_dict(folder.config)).eval()
        state = load_file(str(folder.file(WEIGHTS_FILE)))
        result = self.module.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            raise EncoderUnavailable(
                f"{folder.file(WEIGHTS_FILE)} does not fit MusiCNN (missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}); rerun python -m encore.audio.musicnn_weights --force"
            )

    def __call__(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32)))
        return {name: out.float().numpy() for name, out in zip(OUTPUTS, outputs, strict=True)}


class OnnxNet:
    runtime = "onnx"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from encore.onnx_scorer import onnx_session

        self.session = onnx_session(path, threads)

    def __call__(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(list(OUTPUTS), {"mel": np.ascontiguousarray(patches, dtype=np.float32)})
        return dict(zip(OUTPUTS, outputs, strict=True))


class MusicnnEncoder(AudioEncoder):
    """Five pooled layers at their own widths (front end 561, mid end 1-3 64 each, penultimate 200), flat;
    the penultimate layer is the last, the bundle's dense vector; `analyze` adds both heads' tags."""

    name = "musicnn"
    window_seconds = 3.0  # 187 frames of 256 samples at 16 kHz (2.99 s)
    window_policy = (
        f"back-to-back {PATCH_FRAMES}-frame (3 s) log-mel patches from the start; a last partial patch kept if "
        f">= {MIN_LAST_FRACTION} of a patch, its tail (and a shorter track) filled by repeating the track's frames; "
        f"a track of more than {MAX_PATCHES} patches is heard through {MAX_PATCHES} spread evenly over its length"
    )
    pooling = (
        "per 3 s patch (the time-mean of the front end and of each mid-end layer, and the penultimate layer), "
        "then the mean over patches; the MSD network's"
    )
    sample_rate = MusicnnFrontEnd.sample_rate
    # Patches per network call. Small batches keep each activation (9 MB per patch after the timbral convs)
    # in cache: torch took 40 ms of CPU per patch at 1-2 patches a call and 90 ms at 8-16; ONNX ~32 ms at any.
    batch_patches = 2

    def __init__(self, folders: dict[str, WeightsFolder], nets: dict[str, Any], precision: str) -> None:
        self.folders, self.nets, self.precision = folders, nets, precision
        self.front_end = MusicnnFrontEnd()
        config = folders[EMBEDDING_HEAD].config
        self.layer_names: list[str] = list(config["layer_names"])
        self.layer_dims: list[int] = [int(d) for d in config["layer_dims"]]
        self.tag_names = {head: list(folder.config["tags"]) for head, folder in folders.items()}
        self.revision = folders[EMBEDDING_HEAD].revision
        self.n_layers, self.dim = len(self.layer_dims), self.layer_dims[-1]

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return tuple(self.layer_dims)

    @property
    def runtime(self) -> str:
        return self.nets[EMBEDDING_HEAD].runtime

    def params(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "checkpoint": self.folders[EMBEDDING_HEAD].config["checkpoint"],
            "layers": "front end, mid end 1-3, penultimate",
            "patch_frames": PATCH_FRAMES,
            "max_patches": MAX_PATCHES,
            "mel": "16 kHz, n_fft 512, hop 256, 96 Slaney bands, log10(10000 mel + 1), float32",
        }

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["layers"] = [{"name": n, "dim": d} for n, d in zip(self.layer_names, self.layer_dims, strict=True)]
        info["tag_heads"] = {head: folder.revision for head, folder in self.folders.items()}
        return info

    def patches(self, mono: np.ndarray) -> np.ndarray:
        """Mono 16 kHz -> (P, 187, 96) log-mel patches, P <= MAX_PATCHES."""
        return spread_patches(split_patches(self.front_end(mono)))

    def run(self, patches: np.ndarray, head: str = EMBEDDING_HEAD) -> dict[str, np.ndarray]:
        """Per-patch outputs of one network: tags (P, 50), penultimate (P, 200), pooled (P, 753)."""
        parts = [
            self.nets[head](patches[i : i + self.batch_patches]) for i in range(0, len(patches), self.batch_patches)
        ]
        return {name: np.concatenate([p[name] for p in parts]).astype(np.float32) for name in OUTPUTS}

    def split_layers(self, outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Track means of the pooled layers, each at its own width: [561, 64, 64, 64, 200]."""
        pooled = outputs["pooled"].mean(axis=0)
        bounds = np.cumsum(self.layer_dims[:-1])[:-1]
        return [*np.split(pooled, bounds), outputs["penultimate"].mean(axis=0)]

    def encode(self, mono: np.ndarray) -> np.ndarray:
        return np.concatenate(self.encode_layers(mono))

    def encode_layers(self, mono: np.ndarray) -> list[np.ndarray]:
        """The per-layer vectors (front end, mid end 1-3, penultimate) of the MSD network, track means."""
        return self.split_layers(self.run(self.patches(mono)))

    def analyze(self, mono: np.ndarray) -> MusicnnAnalysis:
        """Layer vectors (MSD network) and both heads' tags for one track: runs both networks."""
        with stage("mel"):
            patches = self.patches(mono)
        with stage("network"):
            outputs = {head: self.run(patches, head) for head in self.nets}
        return MusicnnAnalysis(
            layers=self.split_layers(outputs[EMBEDDING_HEAD]),
            layer_names=self.layer_names,
            tags={head: out["tags"].mean(axis=0) for head, out in outputs.items()},
            tag_names=self.tag_names,
            n_patches=len(patches),
        )

    def analyze_decoded(self, decoded: DecodedAudio) -> MusicnnAnalysis:
        with stage("resample"):  # downmix and resample to 16 kHz
            mono = to_encoder_input(decoded.samples, decoded.sample_rate, self.sample_rate)
        return self.analyze(mono)

    def encode_with_tags(self, decoded: DecodedAudio) -> tuple[np.ndarray, Tags]:
        """encode_decoded's flat layers plus each head's top tags, from one pass of both networks."""
        analysis = self.analyze_decoded(decoded)
        tags = {head: [name for name, _ in analysis.top_tags(head, TOP_TAGS)] for head in analysis.tags}
        return np.concatenate(analysis.layers).astype(np.float32), tags


def top_tags(analysis: MusicnnAnalysis, k: int = 5) -> dict[str, list[tuple[str, float]]]:
    """The top k tags of each head: {"msd": [(tag, p), ...], "mtt": [...]}."""
    return {head: analysis.top_tags(head, k) for head in analysis.tags}


def open_folders(weights_dir: Path | None) -> dict[str, WeightsFolder]:
    """Both checkpoints' folders, or EncoderUnavailable saying how to get them."""
    try:
        return {head: open_folder(weights_dir, folder) for head, folder in HEADS.items()}
    except EncoderUnavailable as exc:
        raise EncoderUnavailable(f"{exc}; get them with: python -m encore.audio.musicnn_weights --out weights") from exc


def choose_musicnn_runtime(folders: dict[str, WeightsFolder], runtime: str) -> tuple[str, str]:
    """(runtime, precision) for both networks together: auto takes ONNX fp32 only when both exports are current."""
    if runtime in ("torch", "auto"):
        if runtime == "auto":
            try:
                for folder in folders.values():
                    check_export(folder, "fp32")
                return "onnx", "fp32"
            except EncoderUnavailable:
                pass
        return "torch", "fp32"
    precision = "int8" if runtime == "onnx-int8" else "fp32"
    for folder in folders.values():
        check_export(folder, precision)
    return "onnx", precision


def build_musicnn(weights_dir: Path | None, runtime: str = "auto", threads: int | None = None) -> MusicnnEncoder:
    folders = open_folders(weights_dir)
    runtime, precision = choose_musicnn_runtime(folders, runtime)
    try:
        nets = {
            head: OnnxNet(folder.onnx_path(precision), threads) if runtime == "onnx" else TorchNet(folder)
            for head, folder in folders.items()
        }
    except EncoderUnavailable:
        raise
    except Exception as exc:  # a truncated or corrupt file: safetensors, ONNX Runtime and torch errors differ
        raise EncoderUnavailable(
            f"encoder 'musicnn' could not be loaded from {weights_dir} on {runtime} ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from exc
    return MusicnnEncoder(folders, nets, precision)
