"""One object per dataset: what the benchmark knows about it (loader, options, settings, defaults, recall data).

Each dataset module defines `DATASET = Dataset(...)`; training/datasets/registry.py lists them by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from encore.errors import EncoreError
from encore.settings import EncoreSettings
from training.datasets.base import FEATURE_SETTINGS, DatasetSplits
from training.datasets.protocol import ProtocolConfig, ProtocolSplits

if TYPE_CHECKING:
    from training.datasets.content import ContentArrays, MissingPolicy


def shared_data_root() -> Path:
    """The folder holding the downloaded datasets: $ENCORE_DATASETS_DIR, else ../shared/data."""
    return EncoreSettings().datasets_dir


def no_variant(**_options: object) -> str:
    return ""


@dataclass
class RecallSource:
    """What `--task recall` takes from a dataset: every play, their protocol split, the items and their content."""

    plays: pd.DataFrame  # user_id, track_id, num_repeat: every observed play
    splits: ProtocolSplits
    items: np.ndarray  # every item id the content is built for
    content: list[tuple[str, ContentArrays]]  # (modality name, arrays keyed by item id), in --content order
    missing: MissingPolicy  # what items without content get


# (data_root, content settings, protocol, loader options, progress) -> RecallSource
RecallLoader = Callable[[Path, Sequence[str], ProtocolConfig, dict, bool], RecallSource]


@dataclass(frozen=True)
class Dataset:
    """A dataset as the benchmark sees it. `load` checks the options by name, then calls the module's loader."""

    name: str
    loader: Callable[..., DatasetSplits]  # (data_root, features, content, **options) -> DatasetSplits
    options: tuple[str, ...] = ()  # loader options beyond (data_root, features, content); others are refused
    feature_settings: tuple[str, ...] = FEATURE_SETTINGS
    content_settings: tuple[str, ...] = ("none",)
    default_features: str = "id+cat+num"  # the richest setting, used when --features is not given
    default_protocol: ProtocolConfig = field(default_factory=ProtocolConfig)  # protocol flags override its fields
    variant_of: Callable[..., str] = no_variant  # options -> the setting name keying result cells
    data_root: Callable[[], Path] = shared_data_root  # where the data is when --data-root is not given
    recall: RecallLoader | None = None  # the data of `--task recall`; None: not a recall dataset
    recall_content: str = "dense"  # the recall task's default --content

    def check_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise EncoreError(f"dataset {self.name!r} does not take option(s) {unknown}")

    def load(self, data_root: Path, features: str = "all", content: str = "none", **options: object) -> DatasetSplits:
        self.check_options(options)
        return self.loader(data_root, features, content, **options)

    def variant(self, **options: object) -> str:
        """The setting name that keys result cells beside (model, features, content, seed)."""
        self.check_options(options)
        return self.variant_of(**options)

    def check_settings(self, features: Sequence[str], content: Sequence[str]) -> None:
        """Fail on an unknown feature or content setting before the first cell of a grid trains."""
        for kind, given, known in (
            ("feature", features, self.feature_settings),
            ("content", content, self.content_settings),
        ):
            for value in given:
                if value not in known:
                    raise EncoreError(f"unknown {kind} setting {value!r} for {self.name}; known: {', '.join(known)}")
