"""Export the MusiCNN networks to ONNX next to their weights (fp32, and dynamic int8), as onnx_export does for
the other encoders: <weights_dir>/musicnn-{msd,mtt}/onnx/{model.fp32.onnx, model.int8.onnx, export.json}.

One graph per checkpoint: input "mel" (patches, frames, 96), outputs "tags" (patches, 50), "penultimate"
(patches, 200), "pooled" (patches, 753). Needs torch; serving then needs only ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from encore.audio.musicnn_encoder import HEADS, OUTPUTS, PATCH_FRAMES, TorchNet
from encore.audio.onnx_export import OPSET, export_traced, finish_export
from encore.audio.weights import EXPORT_FILE, ONNX_DIR, ONNX_FILES, open_folder

# Dynamic int8 quantizes the dense layers only. Measured on the real weights: adding Conv (ONNX Runtime's
# ConvInteger) made the network 3x slower and cut the penultimate's cosine to the fp32 output to 0.94.
INT8_OPS = ("MatMul", "Gemm")


def export_graph(module: Any, path: Path, opset: int = OPSET) -> Path:
    """Trace the module on two patches; the patch and frame axes stay dynamic."""
    import torch

    example = torch.from_numpy(2.0 + np.random.default_rng(0).standard_normal((2, PATCH_FRAMES, 96), np.float32))
    axes = {"mel": {0: "patches", 1: "frames"}, **{name: {0: "patches"} for name in OUTPUTS}}
    return export_traced(module, example, path, ["mel"], list(OUTPUTS), axes, opset)


def export_folder(weights_dir: Path, folder_name: str, *, int8: bool = True, opset: int = OPSET) -> dict[str, Any]:
    """Export one checkpoint folder; returns what its export.json records."""
    folder = open_folder(weights_dir, folder_name)
    onnx_dir = folder.path / ONNX_DIR
    (onnx_dir / EXPORT_FILE).unlink(missing_ok=True)  # no record while the files are being replaced
    fp32 = export_graph(TorchNet(folder).module, onnx_dir / ONNX_FILES["fp32"], opset)
    int8_ops = list(INT8_OPS) if int8 else []
    return finish_export(onnx_dir, folder_name, folder.revision, fp32, int8=int8, opset=opset, int8_ops=int8_ops)


def export_musicnn(name: str, weights_dir: Path, *, int8: bool = True, opset: int = OPSET) -> dict[str, Any]:
    """name "musicnn": both folders; "musicnn-msd" / "musicnn-mtt": that one. Returns the combined record."""
    folders = list(HEADS.values()) if name == "musicnn" else [name]
    records = [export_folder(weights_dir, folder, int8=int8, opset=opset) for folder in folders]
    return {
        "encoder": name,
        "revision": ", ".join(r["revision"] for r in records),
        "files": {f"{r['encoder']}/{file}": sha for r in records for file, sha in r["files"].items()},
    }
