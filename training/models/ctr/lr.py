"""LR: logistic regression over every field (dense content through a linear map, not dropped)."""

import torch

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import LinearTerm


class LR(CTRModel):
    def __init__(self, spec: FeatureSpec):
        super().__init__(spec)
        self.linear = LinearTerm(spec, include_dense=True)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(inputs).squeeze(1)  # (B,)
