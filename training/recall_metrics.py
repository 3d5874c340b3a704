"""Full-ranking metrics for recall models (MMRec's protocol): every candidate item is scored, the user's
masked items are removed, and the top k is compared with the held-out items.

Definitions, per user with relevant set R and top-k list L (then averaged over users):
  recall@k = |L & R| / |R|        precision@k = |L & R| / k        hit@k = 1 if L & R else 0
  ndcg@k   = sum_{r <= k, L_r in R} 1/log2(r + 1) / sum_{r <= min(|R|, k)} 1/log2(r + 1)
  mrr@k    = 1 / (rank of the first relevant item in L), 0 if none
`random_recall@k` is what a uniformly random ranking of the same candidates gets in expectation: k / n_candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.recall_data import RecallData

KS = (10, 20, 50)
METRICS = ("recall", "ndcg", "hit", "mrr", "precision")
BATCH_USERS = 512


def grouped(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct users (sorted) and, for each, the array of its distinct item rows."""
    if len(users) == 0:
        return np.zeros(0, np.int64), []
    pairs = np.unique(np.stack([users, items], axis=1).astype(np.int64), axis=0)
    distinct, starts = np.unique(pairs[:, 0], return_index=True)
    return distinct, np.split(pairs[:, 1], starts[1:])


def rank_metrics(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    truth: Sequence[np.ndarray],
    exclude: Sequence[np.ndarray] | None = None,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Mean metrics over users. user_vectors: (n, D) rows aligned with `truth` (relevant item rows per user);
    item_vectors: (I, D); exclude: per user, item rows removed from the ranking (training items)."""
    n_items = len(item_vectors)
    top_k = min(max(ks), n_items)
    discount = 1.0 / np.log2(np.arange(2, top_k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    sums = {f"{m}@{k}": 0.0 for k in ks for m in (*METRICS, "random_recall")}
    for start in range(0, len(truth), BATCH_USERS):
        rows = slice(start, min(start + BATCH_USERS, len(truth)))
        scores = user_vectors[rows] @ item_vectors.T  # (B, I)
        b = scores.shape[0]
        n_candidates = np.full(b, n_items)
        if exclude is not None:
            for r, items in enumerate(exclude[rows]):
                scores[r, items] = -np.inf
                n_candidates[r] -= len(items)
        relevant = np.zeros((b, n_items), bool)
        for r, items in enumerate(truth[rows]):
            relevant[r, items] = True
        n_relevant = relevant.sum(1)
        top = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k] if top_k < n_items else np.argsort(-scores, 1)
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)[:, :top_k]
        hits = np.take_along_axis(relevant, top, 1)  # (B, top_k)
        for k in ks:
            h = hits[:, :k]
            n_hits = h.sum(1)
            first = np.where(h.any(1), h.argmax(1) + 1, np.inf)
            sums[f"recall@{k}"] += (n_hits / n_relevant).sum()
            sums[f"precision@{k}"] += (n_hits / k).sum()
            sums[f"hit@{k}"] += (n_hits > 0).sum()
            sums[f"ndcg@{k}"] += ((h * discount[: h.shape[1]]).sum(1) / ideal[np.minimum(n_relevant, k)]).sum()
            sums[f"mrr@{k}"] += (1.0 / first).sum()
            sums[f"random_recall@{k}"] += np.minimum(1.0, k / np.maximum(n_candidates, 1)).sum()
    n = max(len(truth), 1)
    return {name: float(total / n) for name, total in sums.items()}


def seen_csr(user_rows: np.ndarray, item_rows: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """indptr (n_users + 1,) int64 and indices (nnz,) int32 of distinct (user, item) pairs."""
    pairs = np.unique(np.stack([user_rows, item_rows], axis=1), axis=0) if len(user_rows) else np.zeros((0, 2), int)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, pairs[:, 0] + 1, 1)
    return np.cumsum(indptr), pairs[:, 1].astype(np.int32)


def warm_metrics(
    data: RecallData, user_vectors: np.ndarray, item_vectors: np.ndarray, popularity: np.ndarray, ks: tuple[int, ...]
) -> dict[str, float]:
    """Full-ranking metrics over the trained items: valid (training plays masked, prefix valid_), test
    (training and valid plays masked, no prefix) and a popularity ranking of the test plays (prefix popularity_)."""
    n_users = len(data.user_ids)
    train_u, train_i = data.train
    metrics: dict[str, float] = {}
    for split, (users, items) in (("valid", data.valid), ("test", data.test)):
        if not len(users):
            continue
        eval_users, truth = grouped(users, items)
        masked = (
            (train_u, train_i) if split == "valid" else (np.r_[train_u, data.valid[0]], np.r_[train_i, data.valid[1]])
        )
        indptr, indices = seen_csr(*masked, n_users)
        exclude = [indices[indptr[u] : indptr[u + 1]] for u in eval_users]
        found = rank_metrics(user_vectors[eval_users], item_vectors, truth, exclude, ks)
        prefix = "" if split == "test" else "valid_"
        metrics.update({f"{prefix}{name}": v for name, v in found.items()})
        if split == "test":
            ones = np.ones((len(eval_users), 1), np.float32)
            by_popularity = rank_metrics(ones, popularity.astype(np.float32)[:, None], truth, exclude, ks)
            metrics.update(
                {f"popularity_{name}": v for name, v in by_popularity.items() if not name.startswith("random")}
            )
    return metrics
