"""FREEDOM (Zhou & Shen, 2023) as in MMRec: LightGCN on a degree-sensitively pruned user-item graph, plus one
propagation of item id embeddings over a frozen item-item kNN graph built from content.

- Item-item graph: per modality, cosine kNN (k = 10) of the raw content, normalized 1/sqrt(deg deg); the
  modalities' graphs are summed with weights (equal by default). Frozen: never learned, never pruned.
- User-item graph: before each epoch, keep (1 - dropout) of the edges, drawn without replacement with
  probability ~ 1/sqrt(deg(u) deg(i)) (Gumbel top-k), then renormalize. Evaluation uses the full graph.
- Scores: user = LightGCN user; item = LightGCN item + item-item propagated id embedding.
- Extra loss: reg_weight * BPR of the users against each modality's projected content (MMRec's mf_v/mf_t).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from training.models.recall.base import RecallInputs, RecallModel, bpr_loss
from training.models.recall.graph import interactions, knn_graph, lightgcn, normalized_bipartite, to_torch


class FREEDOM(RecallModel):
    needs_content = True
    graph_tensors = ("item_item", "full_adj", "train_adj")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_users: np.ndarray,
        train_items: np.ndarray,
        content: Sequence[torch.Tensor],
        present: Sequence[np.ndarray] | None = None,
        dim: int = 64,
        knn_k: int = 10,
        modality_weights: Sequence[float] | None = None,
        n_ui_layers: int = 2,
        n_mm_layers: int = 1,
        dropout: float = 0.8,  # share of user-item edges pruned each epoch (MMRec tunes 0.8 / 0.9)
        reg_weight: float = 1e-4,  # weight of the content BPR terms
    ):
        super().__init__()
        if not content:
            raise ValueError("FREEDOM needs at least one content modality")
        self.n_users, self.n_items = n_users, n_items
        self.user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, dim)))
        self.item = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, dim)))
        self.projections = nn.ModuleList(nn.Linear(c.shape[1], dim) for c in content)
        for i, c in enumerate(content):
            self.register_buffer(f"content_{i}", c.float())
        self.n_modalities = len(content)
        weights = modality_weights or [1.0 / len(content)] * len(content)
        present = present or [np.ones(n_items, bool)] * len(content)
        item_item = sum(w * knn_graph(c.numpy(), knn_k, p) for w, c, p in zip(weights, content, present, strict=True))
        self.item_item = to_torch(sp.csr_matrix(item_item))
        r = interactions(train_users, train_items, n_users, n_items).tocoo()
        self.edges = (r.row.astype(np.int64), r.col.astype(np.int64))
        degree_u = np.bincount(r.row, minlength=n_users).astype(np.float64)
        degree_i = np.bincount(r.col, minlength=n_items).astype(np.float64)
        self.log_edge_weight = -0.5 * np.log(degree_u[r.row] * degree_i[r.col])
        self.full_adj = normalized_bipartite(r)
        self.train_adj = self.full_adj
        self.n_ui_layers, self.n_mm_layers = n_ui_layers, n_mm_layers
        self.dropout, self.reg_weight = dropout, reg_weight

    @classmethod
    def build(cls, inputs: RecallInputs, dim: int, l2: float, **options) -> FREEDOM:
        del l2  # FREEDOM has no per-example L2 term
        return cls(
            inputs.n_users, inputs.n_items, inputs.train_users, inputs.train_items,
            list(inputs.modalities), list(inputs.present), dim, **options,
        )  # fmt: skip

    def new_epoch(self, rng: np.random.Generator) -> None:
        n_keep = int(len(self.log_edge_weight) * (1.0 - self.dropout))
        keys = self.log_edge_weight + rng.gumbel(size=len(self.log_edge_weight))
        keep = np.argpartition(-keys, n_keep - 1)[:n_keep] if 0 < n_keep < len(keys) else np.arange(len(keys))
        u, i = self.edges[0][keep], self.edges[1][keep]
        self.train_adj = normalized_bipartite(interactions(u, i, self.n_users, self.n_items)).to(self.item.device)

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.item
        for _ in range(self.n_mm_layers):
            h = torch.sparse.mm(self.item_item, h)
        adj = self.train_adj if self.training else self.full_adj
        both = lightgcn(adj, torch.cat([self.user, self.item], 0), self.n_ui_layers)
        users, items = torch.split(both, [self.n_users, self.n_items])
        return users, items + h

    def extra_loss(self, users, pos, neg, user_emb, item_emb) -> torch.Tensor:
        u = user_emb[users]
        loss = user_emb.new_zeros(())
        for m, projection in enumerate(self.projections):
            content = getattr(self, f"content_{m}")
            p, n = projection(content[pos]), projection(content[neg])
            loss = loss + bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        return self.reg_weight * loss
