"""The recall models' training loop: BPR over (user, played item, uniform unplayed item) triples with Adam, and
MMRec's early stopping on valid Recall@20. training/train_recall.py builds the model and calls `train_loop`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from encore.errors import EncoreError
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


def train_loop(
    model: RecallModel, data: RecallData, cfg: RecallConfig
) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]], int]:
    """Adam on BPR over (user, played item, uniform unplayed item) triples; with validation plays, keep the
    epoch with the best valid Recall@20 and stop after `patience` epochs without gain. Returns the exported
    user/item vectors, the history and the best epoch (1-based)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(cfg.model, 0.001)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    users, items = data.train
    n_items = len(data.item_ids)
    positive_keys = np.unique(users * n_items + items)
    user_t, item_t = torch.from_numpy(users), torch.from_numpy(items)
    valid_users, valid_truth = grouped(*data.valid)
    indptr, indices = seen_csr(users, items, len(data.user_ids))
    valid_exclude = [indices[indptr[u] : indptr[u + 1]] for u in valid_users]
    history: list[dict[str, float]] = []
    best: tuple[float, int, np.ndarray, np.ndarray] | None = None
    bar = tqdm(range(cfg.epochs), desc=cfg.model, unit="epoch", disable=not cfg.progress, leave=False)
    for epoch in bar:
        model.train()
        model.new_epoch(rng)
        negatives = torch.from_numpy(sample_negatives(users, n_items, positive_keys, rng))
        order = torch.from_numpy(rng.permutation(len(users)))
        total = 0.0
        for start in range(0, len(users), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            u, i, j = user_t[idx], item_t[idx], negatives[idx]
            user_emb, item_emb = model.embed()
            ua = user_emb[u]
            loss = bpr_loss((ua * item_emb[i]).sum(-1), (ua * item_emb[j]).sum(-1))
            loss = loss + model.extra_loss(u, i, j, user_emb, item_emb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        record = {"epoch": epoch + 1, "loss": total / len(users)}
        if not np.isfinite(record["loss"]):
            raise EncoreError(f"{cfg.model}: the training loss became {record['loss']} in epoch {epoch + 1}")
        if len(valid_users):
            user_vectors, item_vectors = model.export()
            score = rank_metrics(user_vectors[valid_users], item_vectors, valid_truth, valid_exclude, (20,))
            record[f"valid_{STOP_METRIC}"] = score[STOP_METRIC]
            if best is None or score[STOP_METRIC] > best[0]:
                best = (score[STOP_METRIC], epoch + 1, user_vectors, item_vectors)
            bar.set_postfix(loss=f"{record['loss']:.4f}", valid=f"{score[STOP_METRIC]:.4f}")
        history.append(record)
        if best is not None and epoch + 1 - best[1] >= cfg.patience:
            break
    if best is None:
        user_vectors, item_vectors = model.export()
        return user_vectors, item_vectors, history, len(history)
    return best[2], best[3], history, best[1]
