"""BPR-MF (Rendle et al., 2009): user and item factors plus an item bias, scored by a dot product.

`embed()`/`export()` fold the bias into the vectors (user gets a constant 1, item gets its bias) so serving
is one matrix-vector product and the bias reaches cold items through the content projection too.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.recall.base import RecallInputs, RecallModel, bpr_loss, l2_rows

__all__ = ["BPR", "bpr_loss"]


class BPR(RecallModel):
    def __init__(self, n_users: int, n_items: int, dim: int = 64, init_std: float = 0.1, l2: float = 1e-4):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        self.l2 = l2  # on the batch's user/item rows, per example
        # N(0, 0.1) as in MMRec's BPR; the CTR models' 1e-4 is too small for a pure dot-product model.
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)

    @classmethod
    def build(cls, inputs: RecallInputs, dim: int, l2: float, **options) -> BPR:
        return cls(inputs.n_users, inputs.n_items, dim, l2=l2, **options)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users, items: (B,) int64 -> scores (B,)."""
        return (self.user(users) * self.item(items)).sum(-1) + self.item_bias(items).squeeze(-1)

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, dim + 1) and (I, dim + 1): [user, 1] and [item, bias]."""
        ones = torch.ones(self.user.num_embeddings, 1, device=self.user.weight.device)
        return torch.cat([self.user.weight, ones], 1), torch.cat([self.item.weight, self.item_bias.weight], 1)

    def extra_loss(self, users, pos, neg, user_emb, item_emb) -> torch.Tensor:
        return self.l2 * l2_rows(user_emb[users, :-1], item_emb[pos], item_emb[neg])
