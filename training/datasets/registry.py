"""Dataset name -> loader. Each loader takes (data_root, features, content, **options) and returns DatasetSplits."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from encore.errors import EncoreError
from training.datasets import hetrec, taste
from training.datasets.base import DEFAULT_DATA_ROOT, FEATURE_SETTINGS, DatasetSplits
from training.datasets.content import CONTENT_MODES
from training.datasets.frappe import load_frappe
from training.datasets.protocol import ProtocolConfig
from training.datasets.synthetic import OPTIONS as SYNTHETIC_OPTIONS
from training.datasets.synthetic import default_root as synthetic_root
from training.datasets.synthetic import load_synthetic, variant_of

LOADERS: dict[str, Callable[..., DatasetSplits]] = {
    "frappe": load_frappe,
    "synthetic": load_synthetic,
    hetrec.NAME: hetrec.load_hetrec,
    taste.NAME: taste.load_taste,
}
# Options each loader takes beyond (data_root, features, content); anything else is refused by name.
LOADER_OPTIONS: dict[str, tuple[str, ...]] = {
    "frappe": (),
    "synthetic": SYNTHETIC_OPTIONS,
    hetrec.NAME: hetrec.OPTIONS,
    taste.NAME: taste.OPTIONS,
}
# (feature settings, content settings) each dataset knows; a grid is checked against them before any run.
SETTINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "frappe": (("all",), ("none",)),
    "synthetic": (FEATURE_SETTINGS, CONTENT_MODES),
    hetrec.NAME: (FEATURE_SETTINGS, hetrec.CONTENT_SETTINGS),
    taste.NAME: (FEATURE_SETTINGS, taste.CONTENT_SETTINGS),
}


def _check(name: str, options: dict) -> None:
    if name not in LOADERS:
        raise EncoreError(f"unknown dataset {name!r}; known datasets: {', '.join(LOADERS)}")
    unknown = sorted(set(options) - set(LOADER_OPTIONS[name]))
    if unknown:
        raise EncoreError(f"dataset {name!r} does not take option(s) {unknown}")


def load_dataset(
    name: str, data_root: Path, features: str = "all", content: str = "none", **options: object
) -> DatasetSplits:
    _check(name, options)
    return LOADERS[name](data_root, features, content, **options)


def default_data_root(name: str) -> Path:
    """Frappe reads the shared data folder; generated worlds are cached under data/ (ENCORE_DATA_DIR)."""
    if name == "synthetic":
        return synthetic_root()
    return Path(os.environ.get("ENCORE_DATA_ROOT", DEFAULT_DATA_ROOT))


def check_settings(name: str, features: list[str], content: list[str]) -> None:
    """Fail on an unknown feature or content setting before the first cell of a grid trains."""
    _check(name, {})
    known_features, known_content = SETTINGS[name]
    for kind, given, known in (("feature", features, known_features), ("content", content, known_content)):
        for value in given:
            if value not in known:
                raise EncoreError(f"unknown {kind} setting {value!r} for {name}; known: {', '.join(known)}")


def default_protocol(name: str) -> ProtocolConfig:
    """The protocol a dataset uses when no protocol flag is given; flags override its fields."""
    return hetrec.DEFAULT_PROTOCOL if name == hetrec.NAME else ProtocolConfig()


def dataset_variant(name: str, **options: object) -> str:
    """The setting name that keys result cells beside (model, features, content, seed)."""
    _check(name, options)
    if name == hetrec.NAME:
        return hetrec.variant_of(**options)
    if name == taste.NAME:
        return taste.variant_of(**options)
    return variant_of(**options) if name == "synthetic" else ""
