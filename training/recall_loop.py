"""The recall models' training loop: BPR over (user, played item, uniform unplayed item) triples with Adam, and
MMRec's early stopping on valid Recall@20. training/train_recall.py builds the model and calls `train_loop`;
under torchrun `train_loop` trains data-parallel (see its doc).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from encore.errors import EncoreError
from training.distributed import Dist
from training.models.recall import RecallModel, bpr_loss
from training.recall_data import RecallData
from training.recall_metrics import grouped, rank_metrics, seen_csr

if TYPE_CHECKING:
    from training.train_recall import RecallConfig

DEFAULT_LR = {"BPR": 0.01}  # beat 0.005 on the planted set; the others use MMRec's 0.001
STOP_METRIC = "recall@20"  # early stopping on the validation set, as MMRec


def sample_negatives(
    users: np.ndarray, n_items: int, positive_keys: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One uniform item per row, redrawn (a few times) where it is one of the user's training plays."""
    negatives = rng.integers(0, n_items, len(users))
    for _ in range(5):
        keys = users * n_items + negatives
        hit = positive_keys[np.minimum(np.searchsorted(positive_keys, keys), len(positive_keys) - 1)] == keys
        if not hit.any():
            break
        negatives[hit] = rng.integers(0, n_items, int(hit.sum()))
    return negatives


class BatchLoss(nn.Module):
    """The training loss of a batch of (user, played item, unplayed item) triples as a module's forward: the
    BPR loss plus the model's own terms. DistributedDataParallel all-reduces the gradients in the backward of
    its own forward, so this is what `Dist.wrap` wraps (the recall models themselves only embed)."""

    def __init__(self, model: RecallModel):
        super().__init__()
        self.model = model

    def forward(self, u: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        user_emb, item_emb = self.model.embed()  # the whole graph, on every rank
        ua = user_emb[u]
        loss = bpr_loss((ua * item_emb[i]).sum(-1), (ua * item_emb[j]).sum(-1))
        return loss + self.model.extra_loss(u, i, j, user_emb, item_emb)


def data_parallel(model: RecallModel, dist: Dist) -> nn.Module:
    """`BatchLoss(model)`, wrapped in DDP when there are several ranks (the step runs through its forward)."""
    model.sum_scale = float(dist.world_size)
    return dist.wrap(BatchLoss(model), sync_buffers=False)  # the buffers (content) are constants


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, u, i, j) -> torch.Tensor:
    """One Adam step on one batch of triples (this rank's part of the global batch); the batch loss."""
    loss = net(u, i, j)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


class _Triples:
    """This rank's shard of the training pairs, and each epoch's (user, played, unplayed) triples from them."""

    def __init__(self, data: RecallData, dist: Dist, rng: np.random.Generator, device: torch.device):
        users, items = data.train
        self.n_items = len(data.item_ids)
        self.positive_keys = np.unique(users * self.n_items + items)  # every rank's: a negative is never a play
        rows = dist.shard_rows(len(users), "train plays").numpy() if dist.enabled else slice(None)
        self.users = users[rows]
        self.user_t = torch.from_numpy(self.users).to(device)
        self.item_t = torch.from_numpy(items[rows]).to(device)
        self.rng, self.device = rng, device

    def __len__(self) -> int:
        return len(self.users)

    def batches(self, batch_size: int):
        """One epoch: this rank's pairs in a fresh order, each with a freshly drawn negative."""
        negatives = sample_negatives(self.users, self.n_items, self.positive_keys, self.rng)
        negatives_t = torch.from_numpy(negatives).to(self.device)
        order = torch.from_numpy(self.rng.permutation(len(self.users))).to(self.device)
        for start in range(0, len(self.users), batch_size):
            idx = order[start : start + batch_size]
            yield self.user_t[idx], self.item_t[idx], negatives_t[idx]


class _Validation:
    """Valid Recall@20 of the exported vectors (training and no other plays masked) and the best epoch's."""

    def __init__(self, data: RecallData):
        self.users, self.truth = grouped(*data.valid)
        indptr, indices = seen_csr(*data.train, len(data.user_ids))
        self.exclude = [indices[indptr[u] : indptr[u + 1]] for u in self.users]
        self.best_score, self.best_vectors = -np.inf, None

    def __bool__(self) -> bool:
        return bool(len(self.users))

    def improved(self, model: RecallModel) -> tuple[bool, float]:
        user_vectors, item_vectors = model.export()
        score = rank_metrics(user_vectors[self.users], item_vectors, self.truth, self.exclude, (20,))[STOP_METRIC]
        if score > self.best_score:
            self.best_score, self.best_vectors = score, (user_vectors, item_vectors)
            return True, score
        return False, score


def train_loop(
    model: RecallModel, data: RecallData, cfg: RecallConfig, dist: Dist | None = None
) -> tuple[np.ndarray | None, np.ndarray | None, list[dict[str, float]], int]:
    """Adam on BPR over (user, played item, uniform unplayed item) triples; with validation plays, keep the
    epoch with the best valid Recall@20 and stop after `patience` epochs without gain. Returns the exported
    user/item vectors, the history and the best epoch (1-based).

    Data-parallel (`dist` of several ranks, training/distributed.py): every rank holds the whole data and the
    whole model, graph included, and computes the full propagation in `embed()`; only the BPR loss is split:
    each rank takes its shard of the training pairs (`Dist.shard_rows`), draws their order and negatives from
    its own seed, and trains on cfg.batch_size / W of them per step (cfg.batch_size is global); DDP averages
    the gradients, which is the gradient of the global batch. Model randomness (FREEDOM's pruned graph,
    LGMRec's Gumbel noise) comes from the shared seed, so it is the same on every rank. Rank 0 alone
    validates; its "improved" verdict is broadcast, so patience ends training on every rank in the same epoch.
    Ranks other than 0 return no vectors.
    """
    dist = dist or Dist()
    torch.manual_seed(cfg.seed)  # the same on every rank: the model's own randomness must agree
    rng = np.random.default_rng(cfg.seed)
    # One rank: one generator for everything, as before DDP (the same run, the same numbers).
    sample_rng = np.random.default_rng(dist.rank_seed(cfg.seed)) if dist.enabled else rng
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(cfg.model, 0.001)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    net = data_parallel(model, dist)
    device = next(model.parameters()).device
    triples, valid = _Triples(data, dist, sample_rng, device), _Validation(data)
    batch_size = dist.per_rank_batch(cfg.batch_size)
    history: list[dict[str, float]] = []
    best_epoch = 0
    bar = tqdm(
        range(cfg.epochs), desc=cfg.model, unit="epoch", disable=not (cfg.progress and dist.is_main), leave=False
    )
    for epoch in bar:
        model.train()
        model.new_epoch(rng)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for u, i, j in triples.batches(batch_size):
            total += train_step(net, optimizer, u, i, j).double() * len(u)
        loss_sum, count = dist.all_sum(float(total), float(len(triples)))
        record = {"epoch": epoch + 1, "loss": loss_sum / count}
        if not np.isfinite(record["loss"]):
            raise EncoreError(f"{cfg.model}: the training loss became {record['loss']} in epoch {epoch + 1}")
        improved = False
        if valid and dist.is_main:
            improved, score = valid.improved(model)
            record[f"valid_{STOP_METRIC}"] = score
            bar.set_postfix(loss=f"{record['loss']:.4f}", valid=f"{score:.4f}")
        history.append(record)
        if valid:
            best_epoch = epoch + 1 if dist.agree(improved) else best_epoch
            if epoch + 1 - best_epoch >= cfg.patience:
                break
    if not dist.is_main:
        return None, None, history, best_epoch or len(history)
    if valid.best_vectors is None:
        return *model.export(), history, len(history)
    return *valid.best_vectors, history, best_epoch
