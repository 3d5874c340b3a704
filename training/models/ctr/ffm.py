"""FFM (Juan et al., 2016): every field keeps one embedding per other field; pair (i, j) uses
field i's vector for j and field j's vector for i."""

import torch

from encore.errors import EncoreError
from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import FeatureEmbedding, LinearTerm


class FFM(CTRModel):
    def __init__(self, spec: FeatureSpec, embedding_dim: int = 10):
        super().__init__(spec)
        n_fields = len(spec.sparse_fields) + len(spec.scaled_fields) + len(spec.token_fields) + len(spec.dense_fields)
        if n_fields < 2:
            raise EncoreError(f"FFM needs at least two fields, the spec has {n_fields}")
        self.embedding_dim = embedding_dim
        # One (F-1)*D vector per field, read as F-1 field-aware D-vectors. Every field kind takes part the same
        # way: ids and tokens through (F-1)*D-wide tables, and the dense content vector through its MLP whose
        # last layer is (F-1)*D wide, so the content field gets its own vector for each partner field
        # instead of being dropped as in TASTE's FFM.
        self.embedding = FeatureEmbedding(spec, (n_fields - 1) * embedding_dim)
        assert self.embedding.num_fields == n_fields
        self.linear = LinearTerm(spec)
        # Pair (i < j): field i's slot for partner j is j-1, field j's slot for partner i is i.
        rows, cols = torch.triu_indices(n_fields, n_fields, offset=1)
        self.register_buffer("left", rows * (n_fields - 1) + cols - 1, persistent=False)
        self.register_buffer("right", cols * (n_fields - 1) + rows, persistent=False)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, (F-1)*D)
        emb = emb.reshape(emb.shape[0], -1, self.embedding_dim)  # (B, F*(F-1), D)
        v_ij = emb.index_select(1, self.left)  # (B, P, D), P = F(F-1)/2
        v_ji = emb.index_select(1, self.right)
        ffm = (v_ij * v_ji).sum(dim=(1, 2)).unsqueeze(1)  # (B, 1)
        return (self.linear(inputs) + ffm).squeeze(1)
