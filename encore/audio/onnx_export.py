"""Export an encoder's tower (front-end features -> pooled vectors) to ONNX, and its dynamic int8 version.

Writes <folder>/onnx/model.fp32.onnx, model.int8.onnx (optional) and export.json, which records the weights
revision so that a stale export is refused at load time (encore.audio.weights.check_export). Needs torch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from encore.audio.pretrained import PretrainedEncoder
from encore.audio.towers import TorchTower
from encore.audio.weights import EXPORT_FILE, ONNX_DIR, ONNX_FILES, open_folder
from encore.io import atomic_path, sha256_file, write_json_atomic

OPSET = 17
EXTRA_FILES = {"muq-mulan": ("muq_config.json",)}


def export_onnx(
    encoder: PretrainedEncoder, module: Any, path: Path, *, opset: int = OPSET, example_windows: int = 2
) -> Path:
    """Trace `module` on `encoder`'s front-end features of `example_windows` windows; batch axis dynamic."""
    import torch

    rng = np.random.default_rng(0)
    frames = 0.1 * rng.standard_normal((example_windows, int(encoder.window_seconds * encoder.sample_rate)))
    example = torch.from_numpy(encoder.front_end(frames.astype(np.float32)))
    axes = {"features": {0: "windows"}, "pooled": {0: "windows"}}
    return export_traced(module, example, path, ["features"], ["pooled"], axes, opset)


def export_traced(
    module: Any, example: Any, path: Path, inputs: list[str], outputs: list[str], axes: dict, opset: int
) -> Path:
    """torch.onnx.export of `module` on `example`, written atomically (TorchScript exporter: 3-5x faster graphs)."""
    import torch

    with atomic_path(path) as tmp, torch.inference_mode():
        torch.onnx.export(
            module, (example,), tmp, input_names=inputs, output_names=outputs, dynamic_axes=axes,
            opset_version=opset, dynamo=False,
        )  # fmt: skip
    return path


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 (weights int8, activations quantized per batch at run time) of MatMul/Gemm weights."""
    from encore.onnx_scorer import quantize_int8

    with atomic_path(dst) as tmp:
        quantize_int8(src, tmp, op_types_to_quantize=["MatMul", "Gemm"])
    return dst


def export_encoder(name: str, weights_dir: Path, *, int8: bool = True, opset: int = OPSET) -> dict[str, Any]:
    """Export <weights_dir>/<name> (fp32, and int8 when asked); returns what export.json records."""
    if name.startswith("musicnn"):  # two checkpoint folders, three named outputs: its own exporter
        from encore.audio.musicnn_export import export_musicnn

        return export_musicnn(name, weights_dir, int8=int8, opset=opset)

    from encore.audio.encoder import get_encoder

    encoder = get_encoder(name, weights_dir, runtime="torch")
    assert isinstance(encoder, PretrainedEncoder) and isinstance(encoder.tower, TorchTower), name
    folder = open_folder(weights_dir, name, EXTRA_FILES.get(name, ()))
    onnx_dir = folder.path / ONNX_DIR
    (onnx_dir / EXPORT_FILE).unlink(missing_ok=True)  # no record while the files are being replaced
    fp32 = export_onnx(encoder, encoder.tower.module, onnx_dir / ONNX_FILES["fp32"], opset=opset)
    del encoder  # full-size MuQ is 1.2 GB of weights: free it before quantizing
    return finish_export(onnx_dir, name, folder.revision, fp32, int8=int8, opset=opset)


def finish_export(
    onnx_dir: Path, name: str, revision: str, fp32: Path, *, int8: bool, opset: int, **extra: Any
) -> dict[str, Any]:
    """Quantize `fp32` (or drop a stale int8 file), then write export.json last: it marks the export current."""
    import onnxruntime
    import torch

    files = {fp32.name: sha256_file(fp32)}
    if int8:
        quantized = quantize_int8(fp32, onnx_dir / ONNX_FILES["int8"])
        files[quantized.name] = sha256_file(quantized)
    else:
        (onnx_dir / ONNX_FILES["int8"]).unlink(missing_ok=True)
    record = {
        "encoder": name,
        "revision": revision,
        "opset": opset,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        **extra,
    }
    write_json_atomic(onnx_dir / EXPORT_FILE, record)
    return record
