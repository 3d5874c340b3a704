"""VBPR (He & McAuley, 2016) as in MMRec: item = [id embedding || linear(content)], user = one (2D,) vector.

The content branch is part of the model, so a track the model never saw gets the content half of its vector
exactly as trained items do; training/train_recall.py adds a ridge estimate of the id half (see there).
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.recall.base import RecallInputs, RecallModel, l2_rows


class VBPR(RecallModel):
    needs_content = True

    def __init__(self, n_users: int, n_items: int, content: torch.Tensor, dim: int = 64, l2: float = 1e-4):
        """content: (I, C) standardized content of the model's items (all modalities side by side)."""
        super().__init__()
        self.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, 2 * dim)))
        self.item = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, dim)))
        self.content_linear = nn.Linear(content.shape[1], dim)
        nn.init.xavier_uniform_(self.content_linear.weight)
        self.register_buffer("content", content.float())
        self.dim = dim
        self.l2 = l2

    @classmethod
    def build(cls, inputs: RecallInputs, dim: int, l2: float, **options) -> VBPR:
        return cls(inputs.n_users, inputs.n_items, inputs.content, dim, l2=l2, **options)

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, 2D) and (I, 2D) = [id (I, D) || content @ W^T + b (I, D)]."""
        return self.user, torch.cat([self.item, self.content_linear(self.content)], dim=1)

    def extra_loss(self, users, pos, neg, user_emb, item_emb) -> torch.Tensor:
        return self.l2 * l2_rows(user_emb[users], item_emb[pos], item_emb[neg])
