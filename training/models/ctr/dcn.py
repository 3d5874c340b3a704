"""DCN (Wang et al., 2017): a rank-one cross network beside an MLP over the flat field embeddings."""

from collections.abc import Sequence

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import MLP, FeatureEmbedding


class CrossNet(nn.Module):
    """x_{l+1} = x_0 * (w_l . x_l) + b_l + x_l, one weight vector per layer: (B, N) -> (B, N)."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(dim, 1, bias=False) for _ in range(num_layers))
        self.biases = nn.Parameter(torch.zeros(num_layers, dim))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer, weight in enumerate(self.weights):
            x = x + x0 * weight(x) + self.biases[layer]
        return x


class DCN(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 32,
        num_cross_layers: int = 3,
        hidden_units: Sequence[int] = (400, 400, 400),  # empty: cross network only
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        in_dim = self.embedding.num_fields * embedding_dim
        self.crossnet = CrossNet(in_dim, num_cross_layers)
        self.mlp = MLP(in_dim, hidden_units, dropout=dropout, batch_norm=batch_norm) if hidden_units else None
        self.fc = nn.Linear(in_dim + (self.mlp.out_dim if self.mlp is not None else 0), 1)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = self.embedding(inputs).flatten(1)  # (B, F*D)
        out = self.crossnet(x0)
        if self.mlp is not None:
            out = torch.cat([out, self.mlp(x0)], dim=-1)
        return self.fc(out).squeeze(1)
