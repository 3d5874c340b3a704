"""BPR-MF (Rendle et al., 2009): user and item factors plus an item bias, scored by a dot product.

The model only scores; the pairwise loss is `bpr_loss` and sampling, L2 and the optimizer live in
training/train_recall.py. `export()` folds the bias into the vectors (user gets a constant 1, item gets its
bias) so serving is one matrix-vector product and the bias reaches cold items through the projection too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BPR(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 64, init_std: float = 0.1):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        # N(0, 0.1) as in MMRec's BPR; the CTR models' 1e-4 is too small for a pure dot-product model.
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users, items: (B,) int64 -> scores (B,)."""
        return (self.user(users) * self.item(items)).sum(-1) + self.item_bias(items).squeeze(-1)

    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_users, dim + 1) and (n_items, dim + 1) float32 such that score = user_vec @ item_vec."""
        with torch.no_grad():
            ones = torch.ones(self.user.num_embeddings, 1)
            users = torch.cat([self.user.weight, ones], dim=1)
            items = torch.cat([self.item.weight, self.item_bias.weight], dim=1)
        return users.float().contiguous(), items.float().contiguous()


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(s(u, i) - s(u, j)) over (B,) score pairs."""
    return -F.logsigmoid(positive - negative).mean()
