"""AFM (Xiao et al., 2017): FM whose pairwise element-wise products are pooled by learned attention."""

from collections.abc import Sequence

import torch
from torch import nn

from encore.schema import FeatureSpec
from training.models.base import CTRModel
from training.models.layers import Dropout, FeatureEmbedding, LinearTerm


class AFM(CTRModel):
    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 40,
        attention_dim: int = 10,
        attention_dropout: Sequence[float] = (0.0, 0.0),  # on the attention weights, then on the pooled vector
        use_attention: bool = True,  # False: plain sum of the products (FM)
    ):
        super().__init__(spec)
        self.use_attention = use_attention
        self.embedding = FeatureEmbedding(spec, embedding_dim)
        self.linear = LinearTerm(spec)
        rows, cols = torch.triu_indices(self.embedding.num_fields, self.embedding.num_fields, offset=1)
        self.register_buffer("field_p", rows, persistent=False)
        self.register_buffer("field_q", cols, persistent=False)
        self.attention = nn.Sequential(
            nn.Linear(embedding_dim, attention_dim),
            nn.ReLU(),
            nn.Linear(attention_dim, 1, bias=False),
            nn.Softmax(dim=1),  # over the pairs
        )
        self.weight_dropout = Dropout(attention_dropout[0])
        self.pooled_dropout = Dropout(attention_dropout[1])
        self.projection = nn.Linear(embedding_dim, 1, bias=False)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embedding(inputs)  # (B, F, D)
        products = emb.index_select(1, self.field_p) * emb.index_select(1, self.field_q)  # (B, P, D)
        if self.use_attention:
            weights = self.weight_dropout(self.attention(products))  # (B, P, 1)
            pooled = self.pooled_dropout((weights * products).sum(dim=1))  # (B, D)
            afm = self.projection(pooled)
        else:
            afm = products.sum(dim=(1, 2)).unsqueeze(1)
        return (self.linear(inputs) + afm).squeeze(1)
