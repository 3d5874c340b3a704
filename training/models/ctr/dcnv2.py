"""DCNv2 (Wang et al., 2021): a full-rank cross network beside (or before) an MLP."""

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import MLP, FeatureEmbedding


class CrossNetV2(nn.Module):
    """x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, with full W_l: (B, N) -> (B, N)."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x + x0 * layer(x)
        return x


class DCNv2(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 40,
        structure: Literal["parallel", "stacked", "crossnet_only"] = "parallel",
        num_cross_layers: int = 3,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(spec)
        self.structure = structure
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        in_dim = self.embedding.num_fields * embedding_dim
        self.crossnet = CrossNetV2(in_dim, num_cross_layers)
        if structure == "crossnet_only":
            self.mlp, out_dim = None, in_dim
        else:
            self.mlp = MLP(in_dim, hidden_units, dropout=dropout, batch_norm=batch_norm)
            out_dim = self.mlp.out_dim + (in_dim if structure == "parallel" else 0)
        self.fc = nn.Linear(out_dim, 1)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = self.embedding(inputs).flatten(1)  # (B, F*D)
        cross = self.crossnet(x0)
        if self.structure == "parallel":
            out = torch.cat([cross, self.mlp(x0)], dim=-1)
        elif self.structure == "stacked":
            out = self.mlp(cross)
        else:
            out = cross
        return self.fc(out).squeeze(1)
