"""Train a recall model (BPR, VBPR, FREEDOM, LGMRec), fit its content-to-item mapping, evaluate, write bundle files.

- `fit_recall(data, config)`: the core. `data` is a `RecallData` (index rows of train / valid / test plays and
  of cold items, plus content); trains with early stopping on valid Recall@20 when there is a validation set
  (MMRec's protocol), exports user and item vectors, fits the content mapping on training items only, and
  evaluates warm (full ranking over trained items, training items masked; test also masks valid) and cold
  items (items with no training play, ranked among the cold items through their content).
- `train_recall(interactions, content, ...)` / `train_bpr(...)`: split a raw play log first (`split_plays`;
  the bootstrap and the retriever tests use this). The data side (RecallData) lives in training/recall_data.py,
  the BPR training loop in training/recall_loop.py, the metrics and the warm evaluation in
  training/recall_metrics.py, the models in training/models/recall/.
- `RecallArtifacts.component()` is what the retriever serves (encore/retriever_bundle.py writes and reads it).

Content-to-item mapping (every model has one, so a track uploaded later gets an item vector without retraining):
BPR, FREEDOM and LGMRec use a ridge regression from standardized content to the trained item vectors, fit on
training items only (one (C, D) matrix at serving time, cold and warm tracks in one space, alpha by 3-fold
CV). VBPR's item vector is [id part || content part]: the content part is the model's own linear layer, the
id part a ridge estimate, and both are one linear map of the standardized content, served by the same formula.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from encore import feature_names as fn
from encore.errors import EncoreError
from encore.retriever_bundle import ContentProjection, RetrieverComponent
from training.distributed import Dist, check_device
from training.models.recall import CONTENT_MODELS, RECALL_MODELS, VBPR, RecallInputs, RecallModel
from training.recall_data import Content, RecallData, content_from_frame, content_matrix, split_frame
from training.recall_loop import train_loop
from training.recall_metrics import KS, grouped, rank_metrics, seen_csr, warm_metrics

log = logging.getLogger(__name__)

_MIN_STD = 1e-8  # a constant content dimension is left unscaled instead of divided by ~0


@dataclass(frozen=True)
class RecallConfig:
    model: str = "BPR"  # a key of training.models.recall.RECALL_MODELS
    dim: int = 64  # embedding size (BPR exports dim + 1 columns with the bias; VBPR 2 * dim)
    epochs: int = 30  # the most; with a validation set training stops after `patience` epochs without gain
    patience: int = 5
    batch_size: int = 2048  # MMRec's default
    lr: float | None = None  # None: recall_loop.DEFAULT_LR or 0.001
    l2: float = 1e-4  # BPR and VBPR: on the batch's user/item rows, per example
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"dropout": 0.8} for FREEDOM
    seed: int = 2020
    test_fraction: float = 0.2  # train_recall's own split: per user, of warm plays
    valid_fraction: float = 0.0  # train_recall's own split: per user, for early stopping
    cold_item_fraction: float = 0.1  # train_recall's own split: items (with content) withheld from training
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)  # picked by 3-fold CV on train items
    ks: tuple[int, ...] = KS  # cut-offs of the reported metrics (recall@k, ndcg@k, hit@k, mrr@k, precision@k)
    threads: int | None = 1  # torch threads while training: small embedding ops lose more to sync than they gain
    device: str = "cpu"  # "cuda" (or "cuda:N"): the model and the training triples there; evaluation on the CPU
    progress: bool = False  # a tqdm bar over epochs


@dataclass
class RecallArtifacts:
    """Everything the retriever serves, plus how it was trained and how well it ranks."""

    user_ids: np.ndarray  # (U,) str
    user_vectors: np.ndarray  # (U, D) float32
    item_ids: np.ndarray  # (I,) str
    item_vectors: np.ndarray  # (I, D) float32
    seen_indptr: np.ndarray  # (U + 1,) int64: user u played item_ids[seen_indices[indptr[u]:indptr[u+1]]]
    seen_indices: np.ndarray  # (nnz,) int32, sorted within each user: training and validation plays
    popularity: np.ndarray  # (I,) int64: distinct training users per item
    projection: ContentProjection | None
    metrics: dict[str, float]
    config: RecallConfig
    data: dict[str, int] = field(default_factory=dict)  # sizes of the splits, for the manifest
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, valid recall@20
    launch: dict[str, Any] = field(default_factory=dict)  # world_size, backend, batch_size_per_rank

    @property
    def model(self) -> str:
        return self.config.model

    def component(self) -> RetrieverComponent:
        """What the retriever serves from a bundle (`.write(builder)` puts it there)."""
        return RetrieverComponent(
            self.model, self.user_ids, self.user_vectors, self.item_ids, self.item_vectors, self.seen_indptr,
            self.seen_indices, self.popularity, self.projection, self.metrics,
            {"config": asdict(self.config), "data": self.data, "history": self.history, "launch": self.launch},
        )  # fmt: skip


# --- The model ------------------------------------------------------------------------------------------


def standardizer(content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std (floored) of training items' content: the content models' and the projection's."""
    return content.mean(0).astype(np.float32), np.maximum(content.std(0), _MIN_STD).astype(np.float32)


def build_model(data: RecallData, cfg: RecallConfig) -> RecallModel:
    """The configured model for `data`'s users, items, training graph and (standardized) content."""
    if cfg.model not in RECALL_MODELS:
        raise EncoreError(f"unknown recall model {cfg.model!r}; known: {', '.join(RECALL_MODELS)}")
    cls = RECALL_MODELS[cfg.model]
    if cls.needs_content and (data.content is None or not data.modalities):
        raise EncoreError(f"{cfg.model} needs content vectors; none were given")
    return cls.build(model_inputs(data, with_content=cls.needs_content), cfg.dim, cfg.l2, **cfg.model_options)


def model_inputs(data: RecallData, with_content: bool) -> RecallInputs:
    """The sizes and training graph of `data`, plus its content standardized with training-item statistics."""
    n_items = len(data.item_ids)
    users, items = data.train
    if not with_content:
        return RecallInputs(len(data.user_ids), n_items, users, items)
    mean, std = standardizer(data.content[:n_items])
    z = torch.from_numpy((data.content[:n_items] - mean) / std)
    blocks = tuple(z[:, cols] for _, cols, _ in data.modalities)
    present = tuple(p[:n_items] for _, _, p in data.modalities)
    return RecallInputs(len(data.user_ids), n_items, users, items, z, blocks, present)


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
    mean, std = standardizer(content)
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
        mean=mean,
        std=std,
        alpha=float(alphas[best]),
        encoder=dict(encoder),
        cv_r2=float(1 - errors[best] / total) if total > 0 else 0.0,
    )


def content_mapping(
    model: RecallModel, data: RecallData, item_vectors: np.ndarray, cfg: RecallConfig
) -> ContentProjection | None:
    """The model's content -> item vector map, fit on training items only (None without content)."""
    if data.content is None or len(data.item_ids) < 3:
        return None
    train_content = data.content[: len(data.item_ids)]
    encoder = data.encoder or {"encoder": "unknown", "encoder_revision": "unknown"}
    if not isinstance(model, VBPR):
        return fit_projection(train_content, item_vectors, encoder, cfg.ridge_alphas, cfg.seed)
    # VBPR: the content half is the model's own layer on the same standardized content; ridge for the id half.
    id_part = fit_projection(train_content, item_vectors[:, : model.dim], encoder, cfg.ridge_alphas, cfg.seed)
    layer = model.content_linear
    weight = np.hstack([id_part.weight, layer.weight.detach().cpu().numpy().T]).astype(np.float32)
    bias = np.concatenate([id_part.bias, layer.bias.detach().cpu().numpy()]).astype(np.float32)
    return replace(id_part, weight=weight, bias=bias, method="vbpr")


# --- Entry points -----------------------------------------------------------------------------------------


def _check_content(data: RecallData, cfg: RecallConfig) -> None:
    if cfg.model in CONTENT_MODELS and data.content is None:
        raise EncoreError(f"{cfg.model} needs content vectors; none were given")
    if data.content is not None and not (
        data.encoder and data.encoder.get("encoder") and data.encoder.get("encoder_revision")
    ):
        raise EncoreError("content given without encoder={'encoder': ..., 'encoder_revision': ...}")


def fit_recall(
    data: RecallData, config: RecallConfig | None = None, dist: Dist | None = None, **overrides: Any
) -> RecallArtifacts | None:
    """Train `config.model` on `data`, map content to item vectors, evaluate valid / test / cold (see module doc).

    Data-parallel (`dist` of several ranks under torchrun, training/recall_loop.py `train_loop`): every rank
    trains; rank 0 alone evaluates and returns the artifacts, the other ranks return None."""
    cfg = replace(config or RecallConfig(), **overrides)
    dist = dist or Dist()
    _check_content(data, cfg)
    n_users, n_items = len(data.user_ids), len(data.item_ids)
    previous_threads = torch.get_num_threads()
    started = time.perf_counter()
    try:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        model = build_model(data, cfg).to(check_device(cfg.device))
        user_vectors, item_vectors, history, best_epoch = train_loop(model, data, cfg, dist)
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - started
    if user_vectors is None or item_vectors is None:  # not rank 0: rank 0 evaluates and reports
        return None
    model = model.cpu()  # the content mapping reads VBPR's layer as numpy
    log.info("%s: %d epochs on %d plays in %.1f s", cfg.model, len(history), len(data.train[0]), seconds)

    train_u, train_i = data.train
    popularity = np.bincount(train_i, minlength=n_items).astype(np.int64)
    metrics: dict[str, float] = {
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "best_epoch": best_epoch,
        "epochs": len(history),
        "train_seconds": seconds,
    }
    metrics.update(warm_metrics(data, user_vectors, item_vectors, popularity, cfg.ks))
    projection = content_mapping(model, data, item_vectors, cfg)
    metrics.update(cold_metrics(data, user_vectors, projection, cfg.ks))

    # Serving masks what the model learned from or was tuned on; test plays stay unmasked, so the served
    # candidates of a bundle with a test split reproduce its offline test metrics (a production bundle
    # trains on every play, and then every play is masked).
    seen_u, seen_i = np.r_[train_u, data.valid[0]], np.r_[train_i, data.valid[1]]
    seen_indptr, seen_indices = seen_csr(seen_u, seen_i, n_users)
    return RecallArtifacts(
        user_ids=data.user_ids,
        user_vectors=np.ascontiguousarray(user_vectors, dtype=np.float32),
        item_ids=data.item_ids,
        item_vectors=np.ascontiguousarray(item_vectors, dtype=np.float32),
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
        popularity=popularity,
        projection=projection,
        metrics={name: round(float(v), 6) for name, v in metrics.items()},
        config=cfg,
        data=split_sizes(data),
        history=history,
        launch={**dist.record(), "batch_size_per_rank": dist.per_rank_batch(cfg.batch_size)},
    )


def cold_metrics(
    data: RecallData, user_vectors: np.ndarray, projection: ContentProjection | None, ks: tuple[int, ...]
) -> dict[str, float]:
    """The projection's CV R^2 and the cold items' ranking metrics (cold_*), ranked among the cold items."""
    if projection is None:
        return {}
    metrics = {"projection_cv_r2": projection.cv_r2}
    if len(data.cold[0]):
        cold_vectors = projection.apply(data.content[len(data.item_ids) :])
        cold_users, cold_truth = grouped(*data.cold)
        found = rank_metrics(user_vectors[cold_users], cold_vectors, cold_truth, None, ks)
        metrics.update({f"cold_{name}": v for name, v in found.items()})
    return metrics


def split_sizes(data: RecallData) -> dict[str, int]:
    """Users, items and plays of every split, for the manifest."""
    return {
        "users": len(data.user_ids),
        "items": len(data.item_ids),
        "train_plays": len(data.train[0]),
        "valid_plays": len(data.valid[0]),
        "test_plays": len(data.test[0]),
        "cold_plays": len(data.cold[0]),
        "cold_items": len(data.cold_item_ids),
    }


def train_recall(
    interactions: pd.DataFrame,
    content: Content | None = None,
    *,
    encoder: Mapping[str, str] | None = None,
    config: RecallConfig | None = None,
    **overrides: Any,
) -> RecallArtifacts:
    """`split_plays`, then `fit_recall`; overrides replace config fields (model="FREEDOM", dim=32, ...)."""
    cfg = replace(config or RecallConfig(), **overrides)
    artifacts = fit_recall(split_plays(interactions, content, encoder=encoder, config=cfg), cfg)
    assert artifacts is not None  # one process (no dist): always rank 0
    return artifacts


def split_plays(
    interactions: pd.DataFrame,
    content: Content | None = None,
    *,
    encoder: Mapping[str, str] | None = None,
    config: RecallConfig | None = None,
) -> RecallData:
    """Split a play log by RecallConfig's fractions and seed into RecallData.

    interactions: columns user_id, track_id (one row per play; repeats count once).
    content: track_id -> vector, or (ids, (n, C) matrix); tracks without content cannot be cold-tested and
      do not take part in the projection fit. None: no projection (the retriever then refuses new tracks).
    encoder: {"encoder": name, "encoder_revision": rev} of the content vectors (required with content).
    The returned vectors are those evaluated: held-out plays and cold items are not trained on. Cold items
    are not in the item matrix; serving picks them up from the store like any upload.
    """
    cfg = config or RecallConfig()
    missing = [c for c in (fn.USER_ID, fn.TRACK_ID) if c not in interactions.columns]
    if missing:
        raise EncoreError(f"interactions: missing columns {missing}")
    content_ids: dict[str, int] = {}
    if content is not None:
        content_ids, matrix = content_matrix(content)
        content = (list(content_ids), matrix)
    if content_ids and (not encoder or not encoder.get("encoder") or not encoder.get("encoder_revision")):
        raise EncoreError("content given without encoder={'encoder': ..., 'encoder_revision': ...}")
    plays = interactions[[fn.USER_ID, fn.TRACK_ID]].astype(str).drop_duplicates()
    if plays.empty:
        raise EncoreError("interactions: no rows")
    parts = split_frame(
        plays, content_ids, valid_fraction=cfg.valid_fraction, test_fraction=cfg.test_fraction,
        cold_item_fraction=cfg.cold_item_fraction, rng=np.random.default_rng(cfg.seed),
    )  # fmt: skip
    return RecallData.from_frames(parts["train"], parts["valid"], parts["test"], parts["cold"],
                                  content if content_ids else None, encoder=encoder)  # fmt: skip


def train_bpr(interactions: pd.DataFrame, content: Content | None = None, **kwargs: Any) -> RecallArtifacts:
    """`train_recall` with BPR (the demo bundle's retriever)."""
    return train_recall(interactions, content, **{"model": "BPR", **kwargs})


__all__ = [
    "KS",
    "ContentProjection",
    "RecallArtifacts",
    "RecallConfig",
    "RecallData",
    "content_from_frame",
    "fit_projection",
    "fit_recall",
    "split_plays",
    "train_bpr",
    "train_recall",
]
