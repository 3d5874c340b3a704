"""Towers: what turns a batch of front-end features into pooled vectors, on torch or on ONNX Runtime.

Both take (B, ...) float32 numpy features and return (B, L, D) float32, so an encoder does not care which
runtime it got. ONNX needs neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Tower(Protocol):
    runtime: str

    def __call__(self, features: np.ndarray) -> np.ndarray: ...


class TorchTower:
    runtime = "torch"

    def __init__(self, module: Any) -> None:
        self.module = module.eval()

    def __call__(self, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(features))).float().numpy()


class OnnxTower:
    runtime = "onnx"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from encore.onnx_scorer import onnx_session

        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(features, dtype=np.float32)})[0]
