"""NFM (He and Chua, 2017): an MLP over the bi-interaction pooling (sum of pairwise products) plus a linear term."""

from collections.abc import Sequence

import torch

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import MLP, FeatureEmbedding, LinearTerm, bi_interaction


class NFM(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 40,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        self.linear = LinearTerm(spec, use_bias=False)  # the MLP's output layer carries the bias
        self.mlp = MLP(embedding_dim, hidden_units, out_dim=1, dropout=dropout, batch_norm=batch_norm)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D)
        return (self.linear(inputs) + self.mlp(bi_interaction(emb))).squeeze(1)
