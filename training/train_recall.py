"""Train the retriever's BPR vectors and content projection, evaluate them, and write their bundle files.

`train_bpr(interactions, content, encoder=...)` splits the plays, trains BPR-MF in memory, fits the
content-to-item projection, and evaluates both; `write_retriever_files(artifacts, bundle_path)` writes
`<bundle>/retriever/` (npy/npz without pickle, json) and returns the manifest's `components["retriever"]`.

Cold tracks (uploads the model never saw) get an item vector from their audio embedding through a ridge
regression fit from standardized content vectors to the BPR item vectors of training items only. We chose
this over VBPR (content inside the model) and content nearest neighbours because it keeps BPR's warm
ranking untouched, needs one (C, D) matrix at serving time, gives a cold track a vector in the same space
as warm ones (so cold and warm tracks compete by one score), and is checked on items held out of training:
`metrics["cold_recall@20"]` ranks them by projected vector against `cold_random_recall@20`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from encore import feature_names as fn
from encore.errors import EncoreError
from encore.io import write_json_atomic
from training.models.recall import BPR, bpr_loss

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RETRIEVER_DIR = "retriever"  # the component's folder inside a bundle
META_FILE = "retriever.json"
_MIN_STD = 1e-8  # a constant content dimension is left unscaled instead of divided by ~0


@dataclass(frozen=True)
class RecallConfig:
    dim: int = 64  # BPR factors; exported vectors have dim + 1 columns (the item bias folded in)
    epochs: int = 30
    batch_size: int = 2048  # MMRec's default
    lr: float = 0.01  # beat 0.005 at equal epochs on the planted test set (recall@20 .39 vs .27 after 20)
    l2: float = 1e-4  # on the batch's user/item rows, per example
    seed: int = 2020
    test_fraction: float = 0.2  # per user, of warm plays, for Recall/NDCG@k
    cold_item_fraction: float = 0.1  # items (with content) withheld from training to test the projection
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)  # picked by 3-fold CV on train items
    top_k: int = 20
    threads: int | None = 1  # torch threads while training: small embedding ops lose more to sync than they gain


@dataclass(frozen=True)
class ContentProjection:
    """item vector = ((content - mean) / std) @ weight + bias; fit on training items only."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray  # (D,) float32
    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32
    alpha: float
    encoder: dict[str, str]  # {"encoder": name, "encoder_revision": rev}: vectors from anything else are refused
    cv_r2: float  # cross-validated R^2 at the chosen alpha, over training items

    def apply(self, content: np.ndarray) -> np.ndarray:
        """(n, C) -> (n, D) float32. The retriever service applies the same formula to the saved arrays."""
        return (((content - self.mean) / self.std) @ self.weight + self.bias).astype(np.float32)


@dataclass
class RecallArtifacts:
    """Everything the retriever serves, plus how it was trained and how well it ranks."""

    user_ids: np.ndarray  # (U,) str
    user_vectors: np.ndarray  # (U, D) float32
    item_ids: np.ndarray  # (I,) str
    item_vectors: np.ndarray  # (I, D) float32
    seen_indptr: np.ndarray  # (U + 1,) int64: user u played item_ids[seen_indices[indptr[u]:indptr[u+1]]]
    seen_indices: np.ndarray  # (nnz,) int32, sorted within each user
    popularity: np.ndarray  # (I,) int64: distinct training users per item
    projection: ContentProjection | None
    metrics: dict[str, float]
    config: RecallConfig
    data: dict[str, int] = field(default_factory=dict)  # sizes of the splits, for the manifest


Content = Mapping[str, Any] | tuple[Any, np.ndarray]


def content_from_frame(frame: pd.DataFrame) -> tuple[tuple[list[str], np.ndarray], dict[str, str]]:
    """((ids, matrix), encoder) from a track_content frame (track_id, embedding, encoder, encoder_revision),
    e.g. `Store.read_offline("track_content")`; refuses a frame that mixes encoders or revisions."""
    missing = [c for c in (fn.TRACK_ID, "embedding", "encoder", "encoder_revision") if c not in frame.columns]
    if missing:
        raise EncoreError(f"content frame: missing columns {missing}")
    sources = frame[["encoder", "encoder_revision"]].drop_duplicates()
    if len(sources) != 1:
        raise EncoreError(f"content frame mixes {len(sources)} encoder/revision pairs: {sources.values.tolist()}")
    matrix = np.stack([np.asarray(v, dtype=np.float32) for v in frame["embedding"]])
    encoder = {"encoder": str(sources.iloc[0, 0]), "encoder_revision": str(sources.iloc[0, 1])}
    return (frame[fn.TRACK_ID].astype(str).tolist(), matrix), encoder


# --- Splits -------------------------------------------------------------------------------------------


def _content_matrix(content: Content | None) -> tuple[dict[str, int], np.ndarray]:
    """{track_id: row} and (n, C) float32 from a dict of vectors or an (ids, matrix) pair."""
    if content is None:
        return {}, np.zeros((0, 0), np.float32)
    if isinstance(content, tuple):
        ids, matrix = list(content[0]), np.asarray(content[1], dtype=np.float32)
    else:
        ids = list(content)
        matrix = np.stack([np.asarray(content[t], dtype=np.float32) for t in ids]) if ids else np.zeros((0, 0))
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise EncoreError(f"content: expected {len(ids)} vectors of one length, got an array of shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise EncoreError("content: vectors contain NaN or inf")
    return {t: i for i, t in enumerate(ids)}, matrix.astype(np.float32)


def _split(
    plays: pd.DataFrame, content_ids: Mapping[str, int], cfg: RecallConfig, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, warm test, cold test). Cold items are drawn from items with content; every user keeps a
    training play; test rows whose item has no training play are dropped (the model cannot rank them)."""
    items = plays[fn.TRACK_ID].unique()
    with_content = np.array([t for t in items if t in content_ids])
    n_cold = int(round(cfg.cold_item_fraction * len(with_content)))
    cold_items = set(rng.choice(with_content, n_cold, replace=False)) if n_cold else set()
    is_cold = plays[fn.TRACK_ID].isin(cold_items).to_numpy()
    cold, warm = plays[is_cold], plays[~is_cold]

    # Per user: shuffle, then the first ceil(n * (1 - f)) rows (at least one) train.
    order = rng.permutation(len(warm))
    warm = warm.iloc[order]
    rank = warm.groupby(fn.USER_ID).cumcount().to_numpy()
    size = warm.groupby(fn.USER_ID)[fn.TRACK_ID].transform("size").to_numpy()
    n_train = np.maximum(1, np.ceil(size * (1 - cfg.test_fraction)))
    train, test = warm[rank < n_train], warm[rank >= n_train]
    test = test[test[fn.TRACK_ID].isin(set(train[fn.TRACK_ID]))]
    cold = cold[cold[fn.USER_ID].isin(set(train[fn.USER_ID]))]  # an unknown user is served by popularity
    return train, test, cold


def _csr(user_rows: np.ndarray, item_rows: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """indptr (n_users + 1,) int64 and indices (nnz,) int32 of distinct (user, item) pairs."""
    pairs = np.unique(np.stack([user_rows, item_rows], axis=1), axis=0) if len(user_rows) else np.zeros((0, 2), int)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, pairs[:, 0] + 1, 1)
    return np.cumsum(indptr), pairs[:, 1].astype(np.int32)


# --- BPR training -------------------------------------------------------------------------------------


def _sample_negatives(
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


def _fit_bpr(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, cfg: RecallConfig
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Train on (user row, item row) pairs; returns exported user/item vectors and the loss per epoch."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = BPR(n_users, n_items, cfg.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    positive_keys = np.unique(users.astype(np.int64) * n_items + items)
    user_t, item_t = torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64))
    losses = []
    for _ in range(cfg.epochs):
        negatives = torch.from_numpy(_sample_negatives(users.astype(np.int64), n_items, positive_keys, rng))
        order = torch.from_numpy(rng.permutation(len(users)))
        total = 0.0
        for start in range(0, len(users), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            u, i, j = user_t[idx], item_t[idx], negatives[idx]
            loss = bpr_loss(model(u, i), model(u, j))
            rows = (model.user(u), model.item(i), model.item(j), model.item_bias(i), model.item_bias(j))
            loss = loss + cfg.l2 * sum(r.pow(2).sum() for r in rows) / (2 * len(idx))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(users))
    user_vectors, item_vectors = model.export()
    return user_vectors.numpy(), item_vectors.numpy(), losses


# --- Content projection -------------------------------------------------------------------------------


def _ridge_weights(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> list[np.ndarray]:
    """(C, D) ridge weights for every alpha from one SVD; x and y centred (the intercept is not penalized)."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    return [vt.T @ ((s / (s**2 + a))[:, None] * uty) for a in alphas]


def fit_projection(
    content: np.ndarray, item_vectors: np.ndarray, encoder: Mapping[str, str], alphas: tuple[float, ...], seed: int
) -> ContentProjection:
    """Ridge from standardized content (n, C) to item vectors (n, D), alpha by 3-fold CV on squared error."""
    mean = content.mean(0)
    std = np.maximum(content.std(0), _MIN_STD)
    x = ((content - mean) / std).astype(np.float64)  # centred by construction
    y = item_vectors.astype(np.float64)
    folds = np.random.default_rng(seed).integers(0, 3, len(x))
    errors = np.zeros(len(alphas))
    for f in range(3):
        fit, held = folds != f, folds == f
        if fit.sum() < 2 or held.sum() == 0:
            continue
        x_mean, y_mean = x[fit].mean(0), y[fit].mean(0)
        for a, w in enumerate(_ridge_weights(x[fit] - x_mean, y[fit] - y_mean, alphas)):
            errors[a] += (((x[held] - x_mean) @ w + y_mean - y[held]) ** 2).sum()
    best = int(np.argmin(errors))
    total = ((y - y.mean(0)) ** 2).sum()
    weight = _ridge_weights(x, y - y.mean(0), (alphas[best],))[0]
    return ContentProjection(
        weight=weight.astype(np.float32),
        bias=y.mean(0).astype(np.float32),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        alpha=float(alphas[best]),
        encoder=dict(encoder),
        cv_r2=float(1 - errors[best] / total) if total > 0 else 0.0,
    )


# --- Evaluation ---------------------------------------------------------------------------------------


def _rank_metrics(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    truth: list[np.ndarray],
    exclude: list[np.ndarray] | None,
    k: int,
) -> tuple[float, float, float]:
    """Mean Recall@k, NDCG@k over users (full ranking of item_vectors, `exclude` masked) and the mean
    Recall@k a uniformly random ranking of the same candidates would get."""
    recalls, ndcgs, randoms = [], [], []
    discount = 1 / np.log2(np.arange(2, k + 2))
    for start in range(0, len(truth), 1024):
        scores = user_vectors[start : start + 1024] @ item_vectors.T
        for row, relevant in enumerate(truth[start : start + 1024]):
            s = scores[row]
            n_candidates = len(s)
            if exclude is not None:
                s[exclude[start + row]] = -np.inf
                n_candidates -= len(exclude[start + row])
            top = np.argpartition(-s, min(k, len(s) - 1))[:k]
            top = top[np.argsort(-s[top])]
            hits = np.isin(top, relevant)
            recalls.append(hits.sum() / len(relevant))
            ndcgs.append((hits * discount[: len(top)]).sum() / discount[: min(len(relevant), k)].sum())
            randoms.append(min(1.0, k / max(n_candidates, 1)))
    return float(np.mean(recalls)), float(np.mean(ndcgs)), float(np.mean(randoms))


def _grouped_rows(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct users and, for each, the array of its item rows."""
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    distinct, starts = np.unique(users, return_index=True)
    return distinct, np.split(items, starts[1:])


# --- Entry point --------------------------------------------------------------------------------------


def train_bpr(
    interactions: pd.DataFrame,
    content: Content | None = None,
    *,
    encoder: Mapping[str, str] | None = None,
    config: RecallConfig | None = None,
    **overrides: Any,
) -> RecallArtifacts:
    """Split, train BPR, fit the content projection, evaluate; overrides replace config fields (dim=32, ...).

    interactions: columns user_id, track_id (one row per play; repeats count once).
    content: track_id -> vector, or (ids, (n, C) matrix); tracks without content cannot be cold-tested and
      do not take part in the projection fit. None: no projection (the retriever then refuses new tracks).
    encoder: {"encoder": name, "encoder_revision": rev} of the content vectors (required with content).
    The returned vectors are those evaluated: held-out plays and cold items are not trained on. Cold items
    are not in the item matrix; serving picks them up from the store like any upload.
    """
    cfg = replace(config or RecallConfig(), **overrides)
    missing = [c for c in (fn.USER_ID, fn.TRACK_ID) if c not in interactions.columns]
    if missing:
        raise EncoreError(f"interactions: missing columns {missing}")
    content_ids, content_matrix = _content_matrix(content)
    if content_ids and (not encoder or not encoder.get("encoder") or not encoder.get("encoder_revision")):
        raise EncoreError("content given without encoder={'encoder': ..., 'encoder_revision': ...}")
    plays = interactions[[fn.USER_ID, fn.TRACK_ID]].astype(str).drop_duplicates()
    if plays.empty:
        raise EncoreError("interactions: no rows")
    rng = np.random.default_rng(cfg.seed)
    train, test, cold = _split(plays, content_ids, cfg, rng)

    user_ids = np.array(sorted(train[fn.USER_ID].unique()))
    item_ids = np.array(sorted(train[fn.TRACK_ID].unique()))
    user_row = {u: i for i, u in enumerate(user_ids)}
    item_row = {t: i for i, t in enumerate(item_ids)}
    tr_u = train[fn.USER_ID].map(user_row).to_numpy()
    tr_i = train[fn.TRACK_ID].map(item_row).to_numpy()

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        user_vectors, item_vectors, losses = _fit_bpr(tr_u, tr_i, len(user_ids), len(item_ids), cfg)
    finally:
        torch.set_num_threads(previous_threads)
    log.info("BPR: %d epochs on %d plays in %.1f s", cfg.epochs, len(train), time.perf_counter() - started)

    metrics: dict[str, float] = {"final_loss": losses[-1] if losses else float("nan")}
    train_indptr, train_indices = _csr(tr_u, tr_i, len(user_ids))
    if len(test):
        te_users, te_truth = _grouped_rows(
            test[fn.USER_ID].map(user_row).to_numpy(), test[fn.TRACK_ID].map(item_row).to_numpy()
        )
        exclude = [train_indices[train_indptr[u] : train_indptr[u + 1]] for u in te_users]
        recall, ndcg, rand = _rank_metrics(user_vectors[te_users], item_vectors, te_truth, exclude, cfg.top_k)
        pop_users = np.ones((len(te_users), 1), np.float32)
        pop_items = np.bincount(tr_i, minlength=len(item_ids)).astype(np.float32)[:, None]
        pop_recall, _, _ = _rank_metrics(pop_users, pop_items, te_truth, exclude, cfg.top_k)
        k = cfg.top_k
        metrics.update(
            {f"recall@{k}": recall, f"ndcg@{k}": ndcg, f"random_recall@{k}": rand, f"popularity_recall@{k}": pop_recall}
        )

    projection = None
    train_items_with_content = [t for t in item_ids if t in content_ids]
    if content_ids and len(train_items_with_content) >= 3:
        rows = np.array([content_ids[t] for t in train_items_with_content])
        targets = item_vectors[[item_row[t] for t in train_items_with_content]]
        assert encoder is not None
        projection = fit_projection(content_matrix[rows], targets, encoder, cfg.ridge_alphas, cfg.seed)
        metrics["projection_cv_r2"] = projection.cv_r2
        if len(cold):
            cold_ids = np.array(sorted(cold[fn.TRACK_ID].unique()))
            cold_vectors = projection.apply(content_matrix[[content_ids[t] for t in cold_ids]])
            cold_row = {t: i for i, t in enumerate(cold_ids)}
            c_users, c_truth = _grouped_rows(
                cold[fn.USER_ID].map(user_row).to_numpy(), cold[fn.TRACK_ID].map(cold_row).to_numpy()
            )
            recall, ndcg, rand = _rank_metrics(user_vectors[c_users], cold_vectors, c_truth, None, cfg.top_k)
            k = cfg.top_k
            metrics.update({f"cold_recall@{k}": recall, f"cold_ndcg@{k}": ndcg, f"cold_random_recall@{k}": rand})

    # Serving excludes every known play of a bundle item, held-out ones included.
    known = pd.concat([train, test])
    seen_indptr, seen_indices = _csr(
        known[fn.USER_ID].map(user_row).to_numpy(), known[fn.TRACK_ID].map(item_row).to_numpy(), len(user_ids)
    )
    return RecallArtifacts(
        user_ids=user_ids,
        user_vectors=user_vectors,
        item_ids=item_ids,
        item_vectors=item_vectors,
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
        popularity=np.bincount(tr_i, minlength=len(item_ids)).astype(np.int64),
        projection=projection,
        metrics={name: round(float(v), 6) for name, v in metrics.items()},
        config=cfg,
        data={
            "train_plays": len(train),
            "test_plays": len(test),
            "cold_plays": len(cold),
            "cold_items": int(cold[fn.TRACK_ID].nunique()),
        },
    )


# --- Bundle files -------------------------------------------------------------------------------------


def write_retriever_files(artifacts: RecallArtifacts, bundle_path: str | Path) -> dict[str, Any]:
    """Write `<bundle_path>/retriever/` and return the manifest entry for `components["retriever"]`.

    Files: user_ids.npy, item_ids.npy (unicode arrays), user_vectors.npy, item_vectors.npy (float32),
    seen.npz (indptr, indices), popularity.npy, projection.npz (weight, bias, mean, std; only with
    content) and retriever.json (format, encoder, metrics, config). Nothing needs pickle to load.
    """
    a = artifacts
    folder = Path(bundle_path) / RETRIEVER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "user_ids.npy", a.user_ids.astype(str), allow_pickle=False)
    np.save(folder / "item_ids.npy", a.item_ids.astype(str), allow_pickle=False)
    np.save(folder / "user_vectors.npy", a.user_vectors.astype(np.float32), allow_pickle=False)
    np.save(folder / "item_vectors.npy", a.item_vectors.astype(np.float32), allow_pickle=False)
    np.save(folder / "popularity.npy", a.popularity.astype(np.int64), allow_pickle=False)
    np.savez(folder / "seen.npz", indptr=a.seen_indptr.astype(np.int64), indices=a.seen_indices.astype(np.int32))
    projection = None
    if a.projection is not None:
        p = a.projection
        np.savez(folder / "projection.npz", weight=p.weight, bias=p.bias, mean=p.mean, std=p.std)
        projection = {"method": "ridge", "alpha": p.alpha, "cv_r2": round(p.cv_r2, 6), "content_dim": len(p.mean)}
    entry = {
        "model": "BPR",
        "path": RETRIEVER_DIR,
        "format_version": FORMAT_VERSION,
        "dim": int(a.item_vectors.shape[1]),
        "n_users": len(a.user_ids),
        "n_items": len(a.item_ids),
        "encoder": a.projection.encoder if a.projection else None,
        "projection": projection,
        "metrics": a.metrics,
    }
    write_json_atomic(folder / META_FILE, {**entry, "config": asdict(a.config), "data": a.data})
    return entry
