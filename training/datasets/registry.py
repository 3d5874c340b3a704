"""Dataset name -> Dataset (training/datasets/dataset.py): the loader, its options and settings, its defaults.

Adding a dataset:
  1. write `training/datasets/<name>.py` with a loader `(data_root, features, content, **options) ->
     DatasetSplits` (build it with `protocol.apply_protocol` and `protocol.joined_dataset` for play logs) and
     `DATASET = Dataset(name, loader, options=..., content_settings=..., ...)`: the options the loader takes,
     its feature and content settings, its default protocol, `variant_of(**options)` when options change the
     data, `data_root` when it is not under the shared data folder, and `recall` for `--task recall`;
  2. add one line to `DATASETS` below;
  3. optionally `training/configs/<name>.json` (train and model settings; the defaults apply without one).
`run_benchmark.py --dataset <name>` and the recall task then find it; nothing else names datasets.
"""

from __future__ import annotations

from pathlib import Path

from encore.errors import EncoreError
from training.datasets import frappe, frappe_synth, hetrec, synthetic, taste
from training.datasets.base import DatasetSplits
from training.datasets.dataset import Dataset

DATASETS: dict[str, Dataset] = {
    frappe.DATASET.name: frappe.DATASET,
    synthetic.DATASET.name: synthetic.DATASET,
    hetrec.DATASET.name: hetrec.DATASET,
    taste.DATASET.name: taste.DATASET,
    frappe_synth.DATASET.name: frappe_synth.DATASET,
}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise EncoreError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def recall_dataset(name: str) -> Dataset:
    """The dataset of `--task recall`: one that can give plays and content vectors."""
    known = [n for n, d in DATASETS.items() if d.recall is not None]
    if name not in known:
        raise EncoreError(f"--task recall knows the datasets {', '.join(known)}, not {name!r}")
    return DATASETS[name]


def load_dataset(
    name: str, data_root: Path, features: str = "all", content: str = "none", **options: object
) -> DatasetSplits:
    return get_dataset(name).load(data_root, features, content, **options)
