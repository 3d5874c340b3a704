"""Plays and content as a recall model trains on them: index rows of train / valid / test / cold plays.

`RecallData.from_frames` turns (user_id, track_id) frames and a content matrix into index arrays (users and
items are those with a training play; cold items have none and need content); `split_plays` in
training/train_recall.py splits a raw play log first, the benchmark (training/recall_benchmark.py) takes the
datasets' own protocol splits instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.errors import EncoreError

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


def content_matrix(content: Content) -> tuple[dict[str, int], np.ndarray]:
    """{track_id: row} and (n, C) float32 from a dict of vectors or an (ids, matrix) pair."""
    if isinstance(content, tuple):
        ids, matrix = [str(t) for t in content[0]], np.asarray(content[1], dtype=np.float32)
    else:
        ids = [str(t) for t in content]
        matrix = np.stack([np.asarray(content[t], dtype=np.float32) for t in content]) if ids else np.zeros((0, 0))
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise EncoreError(f"content: expected {len(ids)} vectors of one length, got an array of shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise EncoreError("content: vectors contain NaN or inf")
    return {t: i for i, t in enumerate(ids)}, matrix.astype(np.float32)


@dataclass
class RecallData:
    """Index rows of one split of a play log, ready to train on. Users and items are those with a training
    play; cold items have none (their plays are in `cold`). `content` rows: item_ids, then cold_item_ids."""

    user_ids: np.ndarray  # (U,) str
    item_ids: np.ndarray  # (I,) str
    train: tuple[np.ndarray, np.ndarray]  # (user rows, item rows)
    valid: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    cold_item_ids: np.ndarray  # (n_cold,) str
    cold: tuple[np.ndarray, np.ndarray]  # (user rows, cold item rows)
    content: np.ndarray | None = None  # (I + n_cold, C) float32, modalities side by side
    modalities: list[tuple[str, slice, np.ndarray]] = field(
        default_factory=list
    )  # name, columns, present (I + n_cold,)
    encoder: dict[str, str] | None = None

    @classmethod
    def from_frames(
        cls,
        train: pd.DataFrame,
        valid: pd.DataFrame | None = None,
        test: pd.DataFrame | None = None,
        cold: pd.DataFrame | None = None,
        content: tuple[Sequence[str], np.ndarray] | None = None,
        modalities: Sequence[tuple[str, slice, np.ndarray]] | None = None,
        encoder: Mapping[str, str] | None = None,
    ) -> RecallData:
        """Frames of (user_id, track_id) plays. Held-out rows of unknown users or items are dropped (the model
        cannot rank them); cold plays need content. `modalities` masks are over content's ids; default: one
        modality covering every column, present for every row."""
        empty = pd.DataFrame({fn.USER_ID: [], fn.TRACK_ID: []})
        frames = {n: (f if f is not None else empty)[[fn.USER_ID, fn.TRACK_ID]].astype(str).drop_duplicates()
                  for n, f in (("train", train), ("valid", valid), ("test", test), ("cold", cold))}  # fmt: skip
        if frames["train"].empty:
            raise EncoreError("interactions: no training rows")
        user_ids = np.array(sorted(frames["train"][fn.USER_ID].unique()))
        item_ids = np.array(sorted(frames["train"][fn.TRACK_ID].unique()))
        user_row = pd.Series(np.arange(len(user_ids)), index=user_ids)
        item_row = pd.Series(np.arange(len(item_ids)), index=item_ids)

        def rows(frame: pd.DataFrame, items: pd.Series) -> tuple[np.ndarray, np.ndarray]:
            u, i = frame[fn.USER_ID].map(user_row), frame[fn.TRACK_ID].map(items)
            keep = (u.notna() & i.notna()).to_numpy()
            return u.to_numpy()[keep].astype(np.int64), i.to_numpy()[keep].astype(np.int64)

        content_ids: dict[str, int] = {}
        matrix = None
        if content is not None:
            content_ids, matrix = content_matrix(content)
        cold_items = frames["cold"][fn.TRACK_ID].unique()
        cold_ids = np.array(sorted(t for t in cold_items if t in content_ids and t not in item_row.index))
        cold_row = pd.Series(np.arange(len(cold_ids)), index=cold_ids)
        data = cls(
            user_ids, item_ids, rows(frames["train"], item_row), rows(frames["valid"], item_row),
            rows(frames["test"], item_row), cold_ids, rows(frames["cold"], cold_row),
            encoder=dict(encoder) if encoder else None,
        )  # fmt: skip
        if matrix is not None:
            order = [content_ids.get(t, -1) for t in (*item_ids, *cold_ids)]
            has = np.array(order) >= 0
            data.content = np.where(has[:, None], matrix[np.maximum(order, 0)], 0.0).astype(np.float32)
            given = modalities or [("content", slice(0, matrix.shape[1]), np.ones(len(matrix), bool))]
            data.modalities = [(name, cols, np.asarray(present, bool)[np.maximum(order, 0)] & has)
                               for name, cols, present in given]  # fmt: skip
        return data


def split_frame(
    plays: pd.DataFrame,
    content_ids: Mapping[str, int],
    *,
    valid_fraction: float,
    test_fraction: float,
    cold_item_fraction: float,
    rng: np.random.Generator,
) -> dict[str, pd.DataFrame]:
    """train / valid / test / cold. Cold items are drawn from items with content; every user keeps a training
    play; per user, shuffled plays go train first, then valid, then test."""
    items = plays[fn.TRACK_ID].unique()
    with_content = np.array([t for t in items if t in content_ids])
    n_cold = int(round(cold_item_fraction * len(with_content)))
    cold_items = set(rng.choice(with_content, n_cold, replace=False)) if n_cold else set()
    is_cold = plays[fn.TRACK_ID].isin(cold_items).to_numpy()
    cold, warm = plays[is_cold], plays[~is_cold]
    warm = warm.iloc[rng.permutation(len(warm))]
    rank = warm.groupby(fn.USER_ID).cumcount().to_numpy()
    size = warm.groupby(fn.USER_ID)[fn.TRACK_ID].transform("size").to_numpy()
    n_train = np.maximum(1, np.ceil(size * (1 - test_fraction - valid_fraction)))
    n_valid = np.floor(size * valid_fraction)
    part = np.where(rank < n_train, "train", np.where(rank < n_train + n_valid, "valid", "test"))
    return {"train": warm[part == "train"], "valid": warm[part == "valid"], "test": warm[part == "test"], "cold": cold}
