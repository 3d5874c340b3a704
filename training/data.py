"""Splits as in-memory tensors, batched by index: no per-row Dataset/collate in the training loop."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from encore.errors import SpecError
from encore.ranker_bundle import EvalRows
from encore.schema import FeatureSpec


@dataclass
class TensorSplit:
    """One split, encoded by the spec: packed model inputs, labels, and optional groups for GAUC."""

    name: str
    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor  # float32 (N,)
    groups: np.ndarray | None = None  # e.g. user ids, for per-user GAUC

    @classmethod
    def from_frame(
        cls, name: str, spec: FeatureSpec, frame: pd.DataFrame, group_column: str | None = None
    ) -> TensorSplit:
        if len(frame) == 0:
            raise SpecError(f"the {name} split is empty")
        packed = spec.encode_packed(frame)
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in packed.items()}
        groups = frame[group_column].to_numpy() if group_column else None
        return cls(name, inputs, torch.from_numpy(spec.labels(frame)), groups)

    def __len__(self) -> int:
        return len(self.labels)

    def eval_rows(self) -> EvalRows:
        """The split as rows an ONNX graph is checked on (the int8 graph of the ranker's bundle)."""
        inputs = {name: tensor.numpy() for name, tensor in self.inputs.items()}
        return EvalRows(self.name, inputs, self.labels.numpy())

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Shuffled batches when a generator is given, else in order (evaluation)."""
        n = len(self)
        if generator is None:
            for start in range(0, n, batch_size):
                sl = slice(start, start + batch_size)
                yield {k: v[sl] for k, v in self.inputs.items()}, self.labels[sl]
            return
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v.index_select(0, idx) for k, v in self.inputs.items()}, self.labels.index_select(0, idx)
