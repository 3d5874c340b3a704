"""FM (Rendle, 2010): linear term + all pairwise inner products of field embeddings."""

import torch

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import FeatureEmbedding, LinearTerm, fm_interaction


class FM(CTRModel):
    def __init__(self, spec: FeatureSpec, embedding_dim: int = 10):
        super().__init__(spec)
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        self.linear = LinearTerm(spec)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D)
        return (self.linear(inputs) + fm_interaction(emb)).squeeze(1)
