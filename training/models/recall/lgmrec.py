"""LGMRec (Guo et al., AAAI 2024) as in MMRec: local graph embeddings (collaborative + per-modality) plus a
global hypergraph embedding whose hyperedges are learned from content.

- CGE: LightGCN over the user-item graph with id embeddings.
- MGE, per modality m: items = content_m @ W_m (I, D); users = mean of their items' vectors; then n_mm_layers
  LightGCN propagations. LGE = CGE + sum_m normalize(MGE_m).
- GHE, per modality m: item-hyperedge weights H_i = softmax(content_m @ V_m / tau) (I, K) (Gumbel noise while
  training), users' H_u = mean of their items' rows; hyperedge embeddings = H_i^T CGE_items (K, D); users and
  items read them back through H_u, H_i. GHE = sum_m of those.
- Final: LGE + alpha * normalize(GHE). Extra loss: L2 on the batch's id rows, and with two or more modalities
  an InfoNCE term aligning their hypergraph embeddings (nothing to align with one modality, so none).

Runs with whatever modalities exist (one or more): every term above is a sum over the modalities given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.models.recall.base import RecallInputs, RecallModel, l2_rows
from training.models.recall.graph import interactions, lightgcn, normalized_bipartite, row_normalized


def _xavier(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(*shape)))


def _info_nce(a: torch.Tensor, b: torch.Tensor, all_b: torch.Tensor, tau: float) -> torch.Tensor:
    """Sum over rows of -log(exp(a.b / tau) / sum_j exp(a.b_j / tau)), all vectors L2-normalized."""
    a, b, all_b = F.normalize(a, dim=1), F.normalize(b, dim=1), F.normalize(all_b, dim=1)
    positive = (a * b).sum(-1) / tau
    return -(positive - torch.logsumexp(a @ all_b.T / tau, dim=1)).sum()


class LGMRec(RecallModel):
    needs_content = True
    graph_tensors = ("adj", "user_mean")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        train_users: np.ndarray,
        train_items: np.ndarray,
        content: Sequence[torch.Tensor],
        dim: int = 64,
        n_ui_layers: int = 2,
        n_mm_layers: int = 2,
        hyperedges: int = 4,
        keep_rate: float = 0.5,  # dropout keep rate on the hyperedge weights while training
        alpha: float = 0.2,  # weight of the global (hypergraph) part
        tau: float = 0.2,  # softmax / InfoNCE temperature
        cl_weight: float = 1e-4,
        l2: float = 1e-6,
    ):
        super().__init__()
        if not content:
            raise ValueError("LGMRec needs at least one content modality")
        self.n_users, self.n_items = n_users, n_items
        self.user, self.item = _xavier(n_users, dim), _xavier(n_items, dim)
        self.modality = nn.ParameterList(_xavier(c.shape[1], dim) for c in content)
        self.hyper = nn.ParameterList(_xavier(c.shape[1], hyperedges) for c in content)
        for i, c in enumerate(content):
            self.register_buffer(f"content_{i}", c.float())
        r = interactions(train_users, train_items, n_users, n_items)
        self.adj = normalized_bipartite(r)
        self.user_mean = row_normalized(r)  # (U, I): a user's mean over their items
        self.n_ui_layers, self.n_mm_layers = n_ui_layers, n_mm_layers
        self.keep_rate, self.alpha, self.tau, self.cl_weight, self.l2 = keep_rate, alpha, tau, cl_weight, l2
        self._hyper_embs: list[tuple[torch.Tensor, torch.Tensor]] = []  # per modality, from the last embed()

    @classmethod
    def build(cls, inputs: RecallInputs, dim: int, l2: float, **options) -> LGMRec:
        del l2  # LGMRec's own `l2` option (1e-6) is MMRec's; the BPR-level default does not apply
        return cls(
            inputs.n_users, inputs.n_items, inputs.train_users, inputs.train_items, list(inputs.modalities), dim,
            **options,
        )  # fmt: skip

    def _content(self, m: int) -> torch.Tensor:
        return getattr(self, f"content_{m}")

    def _local(self, m: int) -> torch.Tensor:
        """MGE of modality m: (U + I, D)."""
        items = self._content(m) @ self.modality[m]
        users = torch.sparse.mm(self.user_mean, items)
        both = torch.cat([users, items], 0)
        for _ in range(self.n_mm_layers):
            both = torch.sparse.mm(self.adj, both)
        return both

    def _global(self, m: int, cge_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GHE of modality m: (U, D) users and (I, D) items read back from K learned hyperedges."""
        logits = self._content(m) @ self.hyper[m]  # (I, K)
        if self.training:
            item_h = F.gumbel_softmax(logits, tau=self.tau, dim=1, hard=False)
            item_h = F.dropout(item_h, p=1 - self.keep_rate)
        else:
            item_h = torch.softmax(logits / self.tau, dim=1)
        user_h = torch.sparse.mm(self.user_mean, item_h)  # (U, K)
        edges = item_h.T @ cge_items  # (K, D)
        return user_h @ edges, item_h @ edges

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        cge = lightgcn(self.adj, torch.cat([self.user, self.item], 0), self.n_ui_layers)
        local = cge + sum(F.normalize(self._local(m), dim=1) for m in range(len(self.modality)))
        self._hyper_embs = [self._global(m, cge[self.n_users :]) for m in range(len(self.modality))]
        ghe = sum(torch.cat([u, i], 0) for u, i in self._hyper_embs)
        both = local + self.alpha * F.normalize(ghe, dim=1)
        users, items = torch.split(both, [self.n_users, self.n_items])
        return users, items

    def extra_loss(self, users, pos, neg, user_emb, item_emb) -> torch.Tensor:
        loss = self.l2 * l2_rows(self.user[users], self.item[pos], self.item[neg])
        if (
            len(self._hyper_embs) > 1
        ):  # align each pair of modalities' hypergraph views (one modality: nothing to align)
            cl = user_emb.new_zeros(())
            for a in range(len(self._hyper_embs)):
                for b in range(a + 1, len(self._hyper_embs)):
                    (ua, ia), (ub, ib) = self._hyper_embs[a], self._hyper_embs[b]
                    cl = cl + _info_nce(ua[users], ub[users], ub, self.tau) + _info_nce(ia[pos], ib[pos], ib, self.tau)
            loss = loss + self.cl_weight * self.sum_scale * cl  # InfoNCE sums over the batch's rows
        return loss
