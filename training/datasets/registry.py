"""Dataset name -> loader. Each loader takes (data_root, features, content) and returns DatasetSplits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from encore.errors import EncoreError
from training.datasets.base import DatasetSplits
from training.datasets.frappe import load_frappe

LOADERS: dict[str, Callable[[Path, str, str], DatasetSplits]] = {
    "frappe": load_frappe,
}


def load_dataset(name: str, data_root: Path, features: str = "all", content: str = "none") -> DatasetSplits:
    if name not in LOADERS:
        raise EncoreError(f"unknown dataset {name!r}; known datasets: {', '.join(LOADERS)}")
    return LOADERS[name](data_root, features, content)
