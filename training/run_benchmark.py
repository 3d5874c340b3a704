"""Benchmark entry point: train CTR models on a dataset over several seeds; write results.csv and results.md.

    .venv/bin/python training/run_benchmark.py --dataset frappe --models LR,FM,DeepFM,DCNv2,MaskNet \
        --seeds 2021 --out results/frappe

Each finished run also leaves `<out>/runs/<run-id>/` with the feature spec, the ONNX model, the weights
(safetensors) and a manifest (config, data hashes, metrics, timings, library versions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from encore.errors import EncoreError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "training" / "configs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="dataset name, e.g. frappe")
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. DeepFM,DCNv2")
    p.add_argument("--seeds", default="2021", help="comma-separated integer seeds")
    p.add_argument("--features", default="all", help="feature setting (dataset-specific)")
    p.add_argument("--content", default="none", help="content setting (dataset-specific)")
    p.add_argument("--out", required=True, type=Path, help="output folder for results.csv/results.md/runs")
    p.add_argument("--data-root", type=Path, default=None, help="folder holding the datasets (default ../shared/data)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    p.add_argument("--epochs", type=int, default=None, help="override the maximum number of epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise EncoreError(f"--seeds must be comma-separated integers, got {text!r}") from exc
    if not seeds:
        raise EncoreError("--seeds is empty")
    return seeds


def load_config(dataset: str) -> dict:
    path = CONFIG_DIR / f"{dataset}.json"
    return json.loads(path.read_text()) if path.exists() else {"train": {}, "models": {}}


def run(args: argparse.Namespace) -> Path:
    # Validate everything cheap before touching data or importing torch.
    model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    seeds = parse_seeds(args.seeds)
    if args.threads < 1:
        raise EncoreError("--threads must be >= 1")

    import torch
    from safetensors.torch import save_file

    from encore.io import write_json_atomic
    from encore.schema import FeatureSpec
    from training.data import TensorSplit
    from training.datasets.base import DEFAULT_DATA_ROOT
    from training.datasets.registry import load_dataset
    from training.export import export_onnx
    from training.models.registry import get_ctr_model
    from training.results import ResultsTable
    from training.sysinfo import library_versions
    from training.trainer import TrainConfig, evaluate, fit

    model_classes = {name: get_ctr_model(name) for name in model_names}
    if not model_classes:
        raise EncoreError("--models is empty")
    torch.set_num_threads(args.threads)
    data_root = args.data_root or Path(os.environ.get("ENCORE_DATA_ROOT", DEFAULT_DATA_ROOT))
    config = load_config(args.dataset)

    data = load_dataset(args.dataset, data_root, args.features, args.content)
    spec = FeatureSpec.fit(data.train, data.fields, label=data.label)
    train = TensorSplit.from_frame("train", spec, data.train, data.group_column)
    evals = {
        name: TensorSplit.from_frame(name, spec, frame, data.group_column) for name, frame in data.eval_splits().items()
    }

    results = ResultsTable(args.out)
    runs_dir = args.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    reference = {m: c["bars_test_auc"] for m, c in config["models"].items() if "bars_test_auc" in c}
    for name, cls in model_classes.items():
        model_cfg = config["models"].get(name, {})
        for seed in seeds:
            if results.done(data.name, name, data.features, data.content, seed):
                print(f"skip {name} seed {seed}: already in {results.csv_path}", file=sys.stderr)
                continue
            train_cfg = TrainConfig(**{**config["train"], **model_cfg.get("train", {}), "seed": seed})
            if args.epochs is not None:
                train_cfg.epochs = args.epochs
            train_cfg.progress = not args.no_progress
            torch.manual_seed(seed)
            model = cls(spec, **model_cfg.get("model", {}))
            print(f"== {data.name} {name} seed {seed}", file=sys.stderr)
            started = time.time()
            result = fit(model, train, evals["valid"], train_cfg)
            metrics = {split: evaluate(model, tensors) for split, tensors in evals.items()}

            run_id = f"{data.name}_{data.features}_{data.content}_{name}_s{seed}"
            tmp_dir = Path(tempfile.mkdtemp(dir=runs_dir, prefix=f".{run_id}."))
            try:
                spec.save(tmp_dir / "spec.json")
                weights = {k: v.contiguous() for k, v in model.state_dict().items()}
                save_file(weights, str(tmp_dir / "weights.safetensors"))
                export_onnx(model, tmp_dir / "model.onnx")
                write_json_atomic(
                    tmp_dir / "manifest.json",
                    {
                        "kind": "ctr_run",
                        "run_id": run_id,
                        "dataset": data.name,
                        "model": name,
                        "model_config": model_cfg.get("model", {}),
                        "train_config": train_cfg.to_dict(),
                        "features": data.features,
                        "content": data.content,
                        "feature_spec_hash": spec.hash,
                        "data_files": data.files,
                        "metrics": metrics,
                        "best_epoch": result.best_epoch,
                        "epochs_run": result.epochs_run,
                        "train_seconds": result.train_seconds,
                        "train_samples_per_s": result.samples_per_s,
                        "wall_seconds": time.time() - started,
                        "threads": args.threads,
                        "history": [vars(e) for e in result.history],
                        "versions": library_versions(),
                        "created": datetime.now(UTC).isoformat(),
                    },
                )
                final_dir = runs_dir / run_id
                if final_dir.exists():
                    shutil.rmtree(final_dir)
                tmp_dir.rename(final_dir)
            except BaseException:
                shutil.rmtree(tmp_dir, ignore_errors=True)
                raise
            results.add(
                [
                    {
                        "dataset": data.name,
                        "model": name,
                        "features": data.features,
                        "content": data.content,
                        "seed": seed,
                        "split": split,
                        "auc": m["auc"],
                        "logloss": m["logloss"],
                        "gauc": m.get("gauc"),
                        "best_epoch": result.best_epoch,
                        "epochs": result.epochs_run,
                        "train_seconds": round(result.train_seconds, 3),
                        "train_samples_per_s": round(result.samples_per_s, 1),
                        "steal_pct": round(result.median_steal_pct, 2),
                        "run_dir": str(final_dir),
                    }
                    for split, m in metrics.items()
                ]
            )
            results.write(reference or None)
            shown = ", ".join(f"{s} auc={m['auc']:.4f}" for s, m in metrics.items())
            print(f"{name} seed {seed}: {shown}; {result.samples_per_s:,.0f} samples/s", file=sys.stderr)
    return args.out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = run(args)
    except EncoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"results in {out / 'results.csv'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
