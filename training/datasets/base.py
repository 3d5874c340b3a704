"""What every dataset loader returns: the splits, the fields to fit, and provenance for the manifest (a
`step_record` after every build step)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from encore.errors import EncoreError
from encore.schema import FieldConfig

USER, ITEM = "user_id", "track_id"  # the id columns of a play log


@dataclass
class DatasetSplits:
    name: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    fields: list[FieldConfig]
    label: str = "label"
    group_column: str | None = None  # per-user GAUC when set
    features: str = "all"
    content: str = "none"
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256 of every input file
    extra_eval: dict[str, pd.DataFrame] = field(default_factory=dict)  # e.g. cold / mixed test sets
    variant: str = ""  # world size / protocol tag, so different settings never share a result cell
    oracle_auc: dict[str, float] = field(default_factory=dict)  # eval split -> AUC of the true probabilities
    # (epoch, model seed) -> fresh training rows (new negatives); None when negatives are fixed (Frappe).
    train_sampler: Callable[[int, int], pd.DataFrame] | None = None
    run_files: dict[str, Path] = field(default_factory=dict)  # name -> file/folder saved with every run
    steps: list[dict] = field(default_factory=list)  # rows/users/items/checksum after every build step
    # Parquet training rows to stream (training/streaming.py) instead of `train`, which then holds no rows.
    train_stream: Path | None = None

    def eval_splits(self) -> dict[str, pd.DataFrame]:
        return {"valid": self.valid, "test": self.test, **self.extra_eval}


def step_record(step: str, frame: pd.DataFrame, user: str = USER, item: str = ITEM) -> dict:
    """Rows, users, items and a content checksum of `frame` after a named step of a dataset build."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()
    return {
        "step": step,
        "rows": len(frame),
        "users": int(frame[user].nunique()),
        "items": int(frame[item].nunique()),
        "sha256": digest[:16],
    }


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise EncoreError(f"dataset file not found: {path}")
    return path


FEATURE_SETTINGS = ("id", "id+cat", "id+cat+num")  # TASTE's three feature settings


def taste_fields(
    dataset: str,
    features: str,
    user_cat: Sequence[str],
    item_cat: Sequence[str],
    user_num: Sequence[str],
    item_num: Sequence[str],
) -> list[FieldConfig]:
    """FieldConfigs of a TASTE feature setting: ids, then categoricals, then quantile-bucketized numerics."""
    if features not in FEATURE_SETTINGS:
        raise EncoreError(f"unknown feature setting {features!r} for {dataset}; known: {', '.join(FEATURE_SETTINGS)}")
    fields = [FieldConfig("user_id", "id", owner="user"), FieldConfig("track_id", "id", owner="item")]
    if "cat" in features:
        fields += [FieldConfig(c, "categorical", owner="user") for c in user_cat]
        fields += [FieldConfig(c, "categorical", owner="item") for c in item_cat]
    if "num" in features:
        fields += [FieldConfig(c, "numeric", owner="user", numeric_mode="quantile") for c in user_num]
        fields += [FieldConfig(c, "numeric", owner="item", numeric_mode="quantile") for c in item_num]
    return fields
