"""Export a CTR model to ONNX (opset 17, dynamic batch): named inputs from the spec, output `score`."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from encore.io import atomic_path
from encore.schema import OOV, FeatureSpec
from training.models.base import CTRModel

OPSET = 17


class _ScoreGraph(nn.Module):
    """Positional inputs in `spec.input_names()` order -> click probability (B,)."""

    def __init__(self, model: CTRModel, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(dict(zip(self.names, tensors, strict=True))))


def example_inputs(spec: FeatureSpec, batch: int = 2) -> dict[str, np.ndarray]:
    """A small valid batch (all-OOV ids, zero vectors) used to trace the graph."""
    inputs: dict[str, np.ndarray] = {}
    if spec.sparse_fields:
        inputs["sparse"] = np.full((batch, len(spec.sparse_fields)), OOV, dtype=np.int64)
    if spec.scaled_fields:
        inputs["numeric"] = np.zeros((batch, len(spec.scaled_fields)), dtype=np.float32)
    for f in spec.token_fields:
        inputs[f.name] = np.full((batch, f.max_len), OOV, dtype=np.int64)
    for f in spec.dense_fields:
        inputs[f.name] = np.zeros((batch, f.dim), dtype=np.float32)
    return inputs


def export_onnx(model: CTRModel, path: str | Path) -> Path:
    """Write the ONNX graph atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    names = model.spec.input_names()
    example = tuple(torch.from_numpy(v) for v in example_inputs(model.spec).values())
    model.eval()
    # The TorchScript exporter (dynamo=False) gave 3-5x faster graphs for these small models;
    # torch now marks it deprecated, which is noise here.
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            _ScoreGraph(model, names).eval(),
            example,
            tmp,
            input_names=names,
            output_names=["score"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "score"]},
            opset_version=OPSET,
            dynamo=False,
        )
    return path
