"""Frappe (BARS Frappe_x1 split): label plus ten categorical id columns, read from x1/{train,valid,test}.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from encore.errors import EncoreError
from encore.io import sha256_file
from encore.schema import FieldConfig
from training.datasets.base import DatasetSplits, require_file, step_record
from training.datasets.dataset import Dataset

LABEL = "label"
FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]
OWNERS = {"user": "user", "item": "item"}


def load_frappe(root: Path, features: str = "all", content: str = "none") -> DatasetSplits:
    """`root` is the data root holding `frappe/x1/`. Frappe has no audio: only features=all, content=none."""
    if features != "all" or content != "none":
        raise EncoreError(f"frappe supports only --features all --content none (got {features!r}, {content!r})")
    folder = root / "frappe" / "x1"
    if not folder.is_dir():
        raise EncoreError(f"dataset folder not found: {folder} (set --data-root or ENCORE_DATASETS_DIR)")
    splits, files = {}, {}
    for name in ("train", "valid", "test"):
        path = require_file(folder / f"{name}.csv")
        splits[name] = _read_split(path, name)
        files[str(path)] = sha256_file(path)
    fields = [FieldConfig(name=c, kind="categorical", owner=OWNERS.get(c, "context"), min_count=1) for c in FIELDS]
    steps = [step_record(f"read:{name}", frame, "user", "item") for name, frame in splits.items()]
    return DatasetSplits(
        "frappe",
        splits["train"],
        splits["valid"],
        splits["test"],
        fields,
        LABEL,
        group_column="user",
        files=files,
        steps=steps,
    )


def _read_split(path: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = [LABEL, *FIELDS]
    unknown = [c for c in frame.columns if c not in expected]
    missing = [c for c in expected if c not in frame.columns]
    if unknown or missing:
        raise EncoreError(
            f"{path}: unknown column(s) {unknown}, missing column(s) {missing}; frappe columns are {expected}"
        )
    if frame.empty:
        raise EncoreError(f"{path}: the {name} split is empty")
    for column in expected:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values != np.floor(values))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise EncoreError(
                f"{path}: column {column!r} must hold integers; row {row + 2} has {frame[column].iloc[row]!r}"
            )
        frame[column] = values.astype(np.int64)
    return frame


DATASET = Dataset("frappe", load_frappe, feature_settings=("all",), content_settings=("none",), default_features="all")
