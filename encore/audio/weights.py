"""Local weight folders of the pretrained encoders: what must be there, the revision, and the runtime choice.

Layout (docs/encoders.md): <weights_dir>/<encoder>/config.json + model.safetensors (+ encoder extras), and
after export <weights_dir>/<encoder>/onnx/{model.fp32.onnx, model.int8.onnx, export.json}. Nothing is ever
fetched from a hub: a missing file makes the encoder unavailable with a message that names it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encore.audio.encoder import RUNTIMES, EncoderUnavailable

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SOURCE_FILE = "encore.json"  # optional: {"source": hub repo, "revision": hub commit, "license": ...}
ONNX_DIR = "onnx"
ONNX_FILES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx"}
EXPORT_FILE = "export.json"


@dataclass(frozen=True)
class WeightsFolder:
    """A checked folder: config parsed, weights present, revision known."""

    encoder: str
    path: Path
    config: dict[str, Any]
    revision: str

    def file(self, name: str) -> Path:
        return self.path / name

    def onnx_path(self, precision: str) -> Path:
        return self.path / ONNX_DIR / ONNX_FILES[precision]


def open_folder(weights_dir: Path | None, encoder: str, extra_files: tuple[str, ...] = ()) -> WeightsFolder:
    """The folder <weights_dir>/<encoder>, or EncoderUnavailable naming every missing file."""
    if weights_dir is None:
        raise EncoderUnavailable(
            f"encoder '{encoder}' needs a weights folder <weights_dir>/{encoder} with {CONFIG_FILE} + "
            f"{WEIGHTS_FILE}, but no weights_dir was given (ENCORE_WEIGHTS_DIR / --weights-dir)"
        )
    path = Path(weights_dir) / encoder
    required = (CONFIG_FILE, WEIGHTS_FILE, *extra_files)
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise EncoderUnavailable(
            f"encoder '{encoder}' is not installed: {path} lacks {', '.join(missing)} "
            f"(needs {', '.join(required)}; see docs/encoders.md)"
        )
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise EncoderUnavailable(f"encoder '{encoder}': {path / CONFIG_FILE} is not readable JSON ({exc})") from exc
    return WeightsFolder(encoder, path, config, weights_revision(path))


def weights_revision(path: Path) -> str:
    """encore.json's "revision" (the hub commit the weights came from) or a digest of model.safetensors."""
    source = path / SOURCE_FILE
    if source.is_file():
        revision = json.loads(source.read_text()).get("revision")
        if revision:
            return str(revision)
    digest = hashlib.sha256()
    with open(path / WEIGHTS_FILE, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return f"sha256.{digest.hexdigest()[:12]}"


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def require_modules(encoder: str, *modules: str) -> None:
    """EncoderUnavailable unless every module imports here (torch, transformers are the training extras)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise EncoderUnavailable(
            f"encoder '{encoder}' on the torch runtime needs {' + '.join(missing)} "
            "(pip install -e '.[training]'), or export it to ONNX and use runtime onnx"
        )


def choose_runtime(folder: WeightsFolder, runtime: str) -> tuple[str, str]:
    """(runtime, precision) to use: "torch"/"onnx" and "fp32"/"int8"; "auto" takes ONNX fp32 when a current
    export exists, else torch."""
    if runtime not in RUNTIMES:
        raise EncoderUnavailable(f"unknown encoder runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if runtime == "auto":  # a missing or stale export is not an error here: torch computes the same vectors
        try:
            check_export(folder, "fp32")
        except EncoderUnavailable:
            return "torch", "fp32"
        return "onnx", "fp32"
    if runtime == "torch":
        return "torch", "fp32"
    precision = "int8" if runtime == "onnx-int8" else "fp32"
    check_export(folder, precision)
    return "onnx", precision


def check_export(folder: WeightsFolder, precision: str) -> None:
    """The ONNX file must exist and come from these very weights (export.json records their revision)."""
    onnx_path = folder.onnx_path(precision)
    how = f"python -m training.export_audio_encoder --encoder {folder.encoder} --weights-dir {folder.path.parent}"
    if not onnx_path.is_file():
        raise EncoderUnavailable(f"encoder '{folder.encoder}': no ONNX export at {onnx_path}; run {how}")
    exported = read_json(folder.path / ONNX_DIR / EXPORT_FILE).get("revision")
    if exported != folder.revision:
        raise EncoderUnavailable(
            f"encoder '{folder.encoder}': {onnx_path} was exported from weights revision {exported!r}, "
            f"the folder holds {folder.revision!r}; run {how}"
        )
