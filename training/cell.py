"""One cell of a benchmark grid: a CTR model trained with one seed on one (dataset, features, content) setting.

`train_cell(cell, encoded)` trains and evaluates; `save_run(result, spec, runs_dir)` writes the run folder
(feature spec, safetensors weights, ONNX model, the dataset's run files, manifest, and the per-user AUCs behind
GAUC in per_user_auc.npz) in one atomic step;
`result_rows(result, run_dir)` gives the rows results.csv keeps. training/run_benchmark.py loops over cells.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from encore.io import atomic_path, write_json_atomic
from encore.schema import FeatureSpec
from training.data import TensorSplit
from training.datasets.base import DatasetSplits
from training.distributed import Dist
from training.export import export_onnx
from training.metrics import PER_USER_FILE, save_per_user
from training.models.base import CTRModel
from training.streaming import StreamingSplit, fit_spec_streaming
from training.trainer import TrainConfig, TrainResult, evaluate_per_user, fit


@dataclass(frozen=True)
class GridSettings:
    """How every cell of a grid trains: the dataset's config file plus the command line's overrides."""

    config: dict[str, Any]  # training/configs/<dataset>.json: {"train": {...}, "models": {name: {...}}}
    epochs: int | None = None  # overrides the configured maximum
    threads: int = 1  # torch intra-op threads (recorded; the caller sets them)
    progress: bool = True
    precision: str = "fp32"
    device: str = "cpu"  # cuda / cuda:N: training on the GPU (the model comes back to the CPU after fit)
    compile: bool = False  # torch.compile of the training forward pass (TrainConfig.compile)


@dataclass(frozen=True)
class Cell:
    """What one run is: the data setting, the model and its options, the seed and the training protocol."""

    data: DatasetSplits  # dataset name, variant, features and content, and the frames
    model: str
    model_class: type[CTRModel]
    model_options: dict[str, Any]  # constructor options from the config
    train: TrainConfig  # carries the seed
    threads: int

    @classmethod
    def make(cls, data: DatasetSplits, model: str, model_class: type[CTRModel], seed: int, grid: GridSettings) -> Cell:
        """The cell's configuration: config["train"], then the model's "train" overrides, then the flags."""
        model_cfg = grid.config["models"].get(model, {})
        train = {**grid.config["train"], **model_cfg.get("train", {}), "seed": seed}
        if grid.epochs is not None:
            train["epochs"] = grid.epochs
        flags = {"progress": grid.progress, "precision": grid.precision, "device": grid.device, "compile": grid.compile}
        train_cfg = TrainConfig(**{**train, **flags})
        return cls(data, model, model_class, model_cfg.get("model", {}), train_cfg, grid.threads)

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def run_id(self) -> str:
        """e.g. synthetic_quick_random_id+cat_dense_DeepFM_s1: unique per result cell, safe as a folder name."""
        d = self.data
        variant = d.variant.replace("/", "_").replace("+", "-")
        return f"{d.name}_{variant + '_' if variant else ''}{d.features}_{d.content}_{self.model}_s{self.seed}"


@dataclass(frozen=True)
class EncodedData:
    """A data setting's splits encoded once, shared by every cell trained on it."""

    spec: FeatureSpec
    train: TensorSplit | StreamingSplit
    evals: dict[str, TensorSplit]  # valid, test, then any cold / mixed sets

    @classmethod
    def encode(cls, data: DatasetSplits) -> EncodedData:
        """Fit the feature spec on the training rows and encode every split with it (the training rows as they
        are read when the data streams them)."""
        if data.train_stream is not None:
            spec = fit_spec_streaming(data.train_stream, data.fields, data.label)
            train = StreamingSplit.open("train", spec, data.train_stream)
        else:
            spec = FeatureSpec.fit(data.train, data.fields, label=data.label)
            train = TensorSplit.from_frame("train", spec, data.train, data.group_column)
        evals = {
            name: TensorSplit.from_frame(name, spec, frame, data.group_column)
            for name, frame in data.eval_splits().items()
        }
        return cls(spec, train, evals)


@dataclass
class CellResult:
    cell: Cell
    model: CTRModel  # holding the best epoch's weights
    fit: TrainResult
    metrics: dict[str, dict[str, float]]  # eval split -> auc, logloss, gauc (rank 0 only when data-parallel)
    started: float = field(default_factory=time.time)  # wall clock when training began
    dist: Dist = field(default_factory=Dist)
    per_user: dict[str, pd.DataFrame] = field(default_factory=dict)  # eval split -> user, weight, auc (GAUC's parts)


def train_cell(cell: Cell, encoded: EncodedData, dist: Dist | None = None) -> CellResult:
    """Train the cell's model (seeded) on the encoded training rows, keep the best epoch, evaluate every split.

    Data-parallel (`dist`, training/distributed.py): each rank trains on its shard of the training rows (and
    draws its own negatives, seeded per rank); rank 0 alone evaluates, so other ranks return no metrics."""
    dist = dist or Dist()
    started = time.time()
    model, fitted = fit_cell(cell, encoded, dist=dist)
    metrics, per_user = {}, {}
    evals = encoded.evals if dist.is_main else {}
    for split, tensors in evals.items():
        metrics[split], users = evaluate_per_user(model, tensors)
        if users is not None:
            per_user[split] = users
    return CellResult(cell, model, fitted, metrics, started, dist, per_user)


def fit_cell(
    cell: Cell, encoded: EncodedData, on_epoch: Callable | None = None, dist: Dist | None = None
) -> tuple[CTRModel, TrainResult]:
    """Train the cell's model (seeded), early-stopped on the valid split only; nothing else is evaluated.
    `on_epoch(log)` sees every epoch's validation log (hyper-parameter search prunes with it)."""
    dist = dist or Dist()
    resample = None
    if cell.data.train_sampler is not None:
        sampler, data, seed = cell.data.train_sampler, cell.data, dist.rank_seed(cell.seed)

        def resample(epoch: int) -> TensorSplit:  # fresh negatives each epoch
            return dist.shard(TensorSplit.from_frame("train", encoded.spec, sampler(epoch, seed), data.group_column))

    torch.manual_seed(cell.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = cell.model_class(encoded.spec, **cell.model_options)
    if dist.is_main:
        print(f"== {cell.data.name} {cell.model} seed {cell.seed}", file=sys.stderr)
    return model, fit(model, dist.shard(encoded.train), encoded.evals["valid"], cell.train, resample, dist, on_epoch)


def save_run(result: CellResult, spec: FeatureSpec, runs_dir: Path) -> Path:
    """Write `<runs_dir>/<run id>/` whole (an older folder of the same cell is replaced); returns its path."""
    cell = result.cell
    final = runs_dir / cell.run_id
    with atomic_path(final, directory=True) as folder:
        spec.save(folder / "spec.json")
        weights = {k: v.contiguous() for k, v in result.model.state_dict().items()}
        save_file(weights, str(folder / "weights.safetensors"))
        export_onnx(result.model, folder / "model.onnx")
        for file_name, source in cell.data.run_files.items():  # e.g. the codebooks the tokens came from
            if Path(source).is_dir():
                shutil.copytree(source, folder / file_name)
            else:
                shutil.copy2(source, folder / file_name)
        if result.per_user:  # a few kB: what a bootstrap over users needs (training/significance.py)
            save_per_user(folder / PER_USER_FILE, result.per_user)
        write_json_atomic(folder / "manifest.json", run_manifest(result, spec))
    return final


def run_manifest(result: CellResult, spec: FeatureSpec) -> dict[str, Any]:
    """Config, data provenance, metrics, timings and library versions of one run."""
    cell, data, fitted = result.cell, result.cell.data, result.fit
    return {
        "kind": "ctr_run",
        "run_id": cell.run_id,
        "dataset": data.name,
        "model": cell.model,
        "model_config": cell.model_options,
        "train_config": cell.train.to_dict(),
        "features": data.features,
        "content": data.content,
        "variant": data.variant,
        "oracle_auc": data.oracle_auc,
        "feature_spec_hash": spec.hash,
        "data_files": data.files,
        "data_steps": data.steps,
        "metrics": result.metrics,
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.epochs_run,
        "train_seconds": fitted.train_seconds,
        "train_samples_per_s": fitted.samples_per_s,
        "wall_seconds": time.time() - result.started,
        "threads": cell.threads,  # per rank
        **result.dist.record(),
        "batch_size_per_rank": result.dist.per_rank_batch(cell.train.batch_size),
        "history": [vars(e) for e in fitted.history],
        "versions": library_versions(),
        "created": datetime.now(UTC).isoformat(),
    }


def library_versions(names: tuple[str, ...] = ("torch", "numpy", "pandas", "scikit-learn", "onnxruntime")) -> dict:
    """Python's and these libraries' versions, for the manifest (None for one not installed)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def result_rows(result: CellResult, run_dir: Path) -> list[dict[str, Any]]:
    """One results.csv row per eval split."""
    cell, data, fitted = result.cell, result.cell.data, result.fit
    return [
        {
            "dataset": data.name,
            "variant": data.variant,
            "model": cell.model,
            "features": data.features,
            "content": data.content,
            "seed": cell.seed,
            "split": split,
            "auc": m["auc"],
            "logloss": m["logloss"],
            "gauc": m.get("gauc"),
            "oracle_auc": data.oracle_auc.get(split),
            "best_epoch": fitted.best_epoch,
            "epochs": fitted.epochs_run,
            "train_seconds": round(fitted.train_seconds, 3),
            "train_samples_per_s": round(fitted.samples_per_s, 1),
            "steal_pct": round(fitted.median_steal_pct, 2),
            "run_dir": str(run_dir),
        }
        for split, m in result.metrics.items()
    ]


def summary_line(result: CellResult) -> str:
    shown = ", ".join(f"{s} auc={m['auc']:.4f}" for s, m in result.metrics.items())
    return f"{result.cell.model} seed {result.cell.seed}: {shown}; {result.fit.samples_per_s:,.0f} samples/s"
