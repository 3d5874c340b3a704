"""What every recall model offers the trainer: final user and item embeddings scored by a dot product.

A model only computes embeddings and its own extra loss terms (L2, auxiliary content losses); the BPR loss
on sampled triples, the sampling and the optimizer live in training/train_recall.py. `export()` gives the
vectors serving uses: one dot product per (user, item), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RecallInputs:
    """What a recall model is built from: the sizes, the training graph and the standardized content."""

    n_users: int
    n_items: int
    train_users: np.ndarray  # (P,) user rows of the training plays
    train_items: np.ndarray  # (P,) item rows
    content: torch.Tensor | None = None  # (I, C) standardized content of the trained items, modalities side by side
    modalities: tuple[torch.Tensor, ...] = ()  # content's column block of each modality
    present: tuple[np.ndarray, ...] = ()  # (I,) bool per modality: the items that have it


class RecallModel(nn.Module):
    needs_content: ClassVar[bool] = False  # True: built only when the data has at least one content modality
    # Data-parallel, DDP averages the W ranks' gradients: a term summed (not averaged) over the batch's rows is
    # multiplied by this (the world size, set by the trainer) so the average of W sums over B/W rows is the
    # sum over the B rows of the global batch.
    sum_scale: float = 1.0
    graph_tensors: ClassVar[tuple[str, ...]] = ()  # sparse graphs held as attributes: `.to(device)` moves them

    @classmethod
    def build(cls, inputs: RecallInputs, dim: int, l2: float, **options) -> RecallModel:
        """The model for `inputs` (the one construction path of the trainer); `options` are the config's
        model_options. `l2` is the config's per-example penalty; models with their own penalty ignore it."""
        raise NotImplementedError

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (U, D) user and (I, D) item embeddings; score(u, i) = users[u] @ items[i]."""
        raise NotImplementedError

    def extra_loss(
        self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, user_emb: torch.Tensor, item_emb: torch.Tensor
    ) -> torch.Tensor:
        """Model-specific terms added to the batch's BPR loss; (B,) index tensors and embed()'s outputs."""
        return user_emb.new_zeros(())

    def _apply(self, fn, *args, **kwargs):
        # nn.Module moves parameters and buffers; the sparse graphs are neither (DDP cannot broadcast sparse
        # buffers), so they follow here.
        super()._apply(fn, *args, **kwargs)
        for name in self.graph_tensors:
            setattr(self, name, fn(getattr(self, name)))
        return self

    def new_epoch(self, rng: np.random.Generator) -> None:
        """Called before every training epoch (FREEDOM redraws its pruned graph here)."""

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (U, D) and (I, D) from the full graph, in eval mode (no dropout, no sampling)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            users, items = self.embed()
        self.train(was_training)
        return users.detach().float().cpu().numpy().copy(), items.detach().float().cpu().numpy().copy()


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(s(u, i) - s(u, j)) over (B,) score pairs."""
    return -F.logsigmoid(positive - negative).mean()


def l2_rows(*rows: torch.Tensor) -> torch.Tensor:
    """Sum of squares of the given (B, ...) rows over 2B: the usual per-example L2 on the batch's embeddings."""
    return sum(r.pow(2).sum() for r in rows) / (2 * len(rows[0]))
