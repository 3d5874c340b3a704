"""Score packed feature batches with an exported CTR model in ONNX Runtime (used by the ranker and tests)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort


def cpu_session(path: str | Path, threads: int | None = 1) -> ort.InferenceSession:
    """An InferenceSession on the CPU provider; `threads` intra-op threads (None: ONNX Runtime's default)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """One InferenceSession; `score(packed) -> (N,) float32` probabilities."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.session = cpu_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def score(self, packed: Mapping[str, np.ndarray]) -> np.ndarray:
        feeds = {name: packed[name] for name in self.input_names}
        return self.session.run(["score"], feeds)[0]
