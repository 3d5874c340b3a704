"""Wide & Deep (Cheng et al., 2016): a linear (wide) term plus an MLP over the field embeddings."""

from collections.abc import Sequence

import torch

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import MLP, FeatureEmbedding, LinearTerm


class WideDeep(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 10,
        hidden_units: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        self.linear = LinearTerm(spec, use_bias=False)  # the MLP's output layer carries the bias
        in_dim = self.embedding.num_fields * embedding_dim
        self.mlp = MLP(in_dim, hidden_units, out_dim=1, dropout=dropout, batch_norm=batch_norm)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D)
        return (self.linear(inputs) + self.mlp(emb.flatten(1))).squeeze(1)
