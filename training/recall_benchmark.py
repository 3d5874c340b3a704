"""The recall grid behind `run_benchmark.py --task recall`: BPR / VBPR / FREEDOM / LGMRec over seeds.

    .venv/bin/python training/run_benchmark.py --task recall --dataset synthetic \
        --models BPR,VBPR,FREEDOM,LGMRec --seeds 1,2,3 --threads 1 --out results/recall-synthetic

Data: the dataset's own protocol (k-core, per-user random 80/10/10 split, seed 2020) with 20% of the items
withheld as cold items unless --cold-share says otherwise; every observed play is an interaction (implicit
feedback, as MMRec; the CTR label threshold plays no part). Content: the arrays the CTR models use, as the
`dense` content setting builds them (standardized with training-item statistics, zeros where an item lacks a
modality): synthetic: the audio encoder's vector (one modality); hetrec-lastfm-2k: tag-text vectors and the
Spotify audio descriptors (two modalities). Protocol: MMRec's (training/train_recall.py).

Writes <out>/results.csv (one row per model, seed and split: recall/ndcg/hit/mrr/precision at 10, 20, 50),
results.md (mean ± std tables) and results.png, plus one servable bundle per run under <out>/runs/.
Finished (model, seed) cells are skipped when the command is run again.

Data-parallel (training/recall_loop.py `train_loop`): the same command under torchrun trains every cell on all
ranks, each on its shard of the training plays (gloo on CPU, NCCL with --device cuda); rank 0 alone evaluates
and writes; --batch-size is the global batch:
    torchrun --standalone --nproc_per_node=2 training/run_benchmark.py --task recall --dataset synthetic \
        --models BPR,FREEDOM --seeds 1 --out results/recall-ddp
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from encore.errors import EncoreError
from encore.io import write_bytes_atomic, write_text_atomic
from training.recall_metrics import KS, METRICS

if TYPE_CHECKING:
    from training.distributed import Dist
    from training.train_recall import RecallArtifacts, RecallData

SPLITS = ("valid", "test", "cold")
KEY = ["dataset", "variant", "content", "model", "seed"]
METRIC_COLUMNS = [f"{m}@{k}" for k in KS for m in METRICS]
COLUMNS = [*KEY, "split", *METRIC_COLUMNS, "random_recall@20", "best_epoch", "epochs", "train_seconds",
           "users", "items", "eval_users", "run_dir"]  # fmt: skip
TABLE_METRICS = ("recall@20", "ndcg@20", "recall@50", "hit@50", "mrr@20")


# --- data -------------------------------------------------------------------------------------------------


def _observed(frame: pd.DataFrame, plays: pd.DataFrame) -> pd.DataFrame:
    """The observed (user, item) rows of an eval frame: frozen negatives are never played pairs."""
    pairs = plays[["user_id", "track_id"]].drop_duplicates()
    return frame[["user_id", "track_id"]].drop_duplicates().merge(pairs, on=["user_id", "track_id"], how="inner")


def _dense(arrays, items: np.ndarray, train_items: np.ndarray, missing: str) -> tuple[np.ndarray, np.ndarray]:
    """(len(items), C) vectors of the CTR models' `dense` setting and the mask of items that have them."""
    from training.datasets.content import DENSE_FIELD, MASK_FIELD, build_item_content

    table = build_item_content(arrays, "dense", items, train_items, missing=missing).table  # type: ignore[arg-type]
    vectors = np.stack(table[DENSE_FIELD].to_numpy()).astype(np.float32)
    present = (table[MASK_FIELD].to_numpy() == 0) if MASK_FIELD in table else np.ones(len(items), bool)
    return vectors, present


def recall_options(args: argparse.Namespace) -> dict:
    """The dataset loader options from the flags, the protocol carrying --cold-share."""
    from training.datasets.registry import get_dataset
    from training.run_benchmark import dataset_options

    dataset = get_dataset(args.dataset)
    options = dataset_options(args, dataset)
    options["protocol"] = replace(options.get("protocol", dataset.default_protocol), cold_share=args.cold_share)
    return options


def recall_variant(args: argparse.Namespace) -> str:
    """The result-table name of the setting, e.g. 'default/random+cold20/recall'."""
    from training.datasets.registry import get_dataset

    options = {k: v for k, v in recall_options(args).items() if k in ("size", "world_seed", "protocol")}
    return f"{get_dataset(args.dataset).variant(**options)}/recall"


def load_recall_data(args: argparse.Namespace, content: list[str]) -> RecallData:
    """RecallData for the dataset named in args, with the content modalities asked for."""
    from training.datasets.registry import recall_dataset
    from training.train_recall import RecallData

    dataset = recall_dataset(args.dataset)
    options = recall_options(args)
    root = args.data_root or dataset.data_root()
    source = dataset.recall(root, content, options["protocol"], options, not args.no_progress)
    modalities = []  # (name, vectors over `items`, present, encoder info, content sha256)
    for name, arrays in source.content:
        vectors, present = _dense(arrays, source.items, source.splits.train_items, source.missing)
        modalities.append((name, vectors, present, arrays.encoder, arrays.sha256))
    observed = {name: _observed(frame, source.plays) for name, frame in source.splits.evals.items() if name in SPLITS}
    content_arg = None
    blocks, start = [], 0
    if modalities:
        matrix = np.hstack([m[1] for m in modalities])
        for name, vectors, present, _, _ in modalities:
            blocks.append((name, slice(start, start + vectors.shape[1]), present))
            start += vectors.shape[1]
        content_arg = ([str(i) for i in source.items], matrix)
    encoder = {
        "encoder": "+".join(str(m[3].get("backend")) for m in modalities),
        "encoder_revision": "+".join(str(m[3].get("revision", m[4][:12])) for m in modalities),
    }
    return RecallData.from_frames(
        source.splits.train_positives, observed.get("valid"), observed.get("test"), observed.get("cold"),
        content_arg, blocks or None, encoder if modalities else None,
    )  # fmt: skip


# --- the grid ----------------------------------------------------------------------------------------------


def run_recall(args: argparse.Namespace) -> Path:
    from training.datasets.registry import recall_dataset
    from training.distributed import launched_rank
    from training.models.recall import CONTENT_MODELS, RECALL_MODELS
    from training.run_benchmark import parse_seeds, split_list

    dataset = recall_dataset(args.dataset)
    models = split_list(args.models, "--models")
    unknown = [m for m in models if m not in RECALL_MODELS]
    if unknown:
        raise EncoreError(f"unknown recall model(s) {unknown}; known: {', '.join(RECALL_MODELS)}")
    seeds = parse_seeds(args.seeds)
    if args.threads is not None and args.threads < 1:
        raise EncoreError("--threads must be >= 1")
    if not 0 <= args.cold_share < 1:
        raise EncoreError("--cold-share must be in [0, 1)")
    content_text = args.content if args.content is not None else dataset.recall_content
    content = [c.strip() for c in content_text.split(",") if c.strip() and c.strip() != "none"]
    needs_content = [m for m in models if m in CONTENT_MODELS]
    if needs_content and not content:
        raise EncoreError(f"{', '.join(needs_content)} need content; drop --content none")

    csv_path = args.out / "results.csv"
    rows = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame(columns=COLUMNS)
    content_name = "+".join(content) or "none"
    variant = recall_variant(args)
    todo = [(m, s) for m in models for s in seeds if not _done(rows, args.dataset, variant, content_name, m, s)]
    for m, s in sorted(set((m, s) for m in models for s in seeds) - set(todo)) if launched_rank() == 0 else []:
        print(f"skip {m} seed {s}: already in {csv_path}", file=sys.stderr)
    if not todo:
        return args.out
    from training import distributed

    dist = distributed.context(args.device)  # joins the torchrun group when launched by torchrun
    try:
        _train_grid(args, todo, rows, variant, content, dist)
    finally:
        distributed.shutdown()
    return args.out


def _train_grid(args: argparse.Namespace, todo: list[tuple[str, int]], rows: pd.DataFrame, variant: str,
                content: list[str], dist: Dist) -> None:  # fmt: skip
    """Train the (model, seed) cells in `todo`; every rank trains, rank 0 alone evaluates and writes."""
    import torch

    from training.train_recall import RecallConfig, fit_recall

    content_name = "+".join(content) or "none"
    batch_size = args.batch_size or RecallConfig.batch_size
    if batch_size < 1 or batch_size % dist.world_size:
        raise EncoreError(f"--batch-size {batch_size} (global) does not split evenly over {dist.world_size} ranks")
    threads = args.threads or dist.threads()
    torch.set_num_threads(threads)
    # Every rank holds the whole data (the graph models propagate over the whole graph); rank 0 loads first so
    # that a dataset built on first use is built once, not raced by every rank.
    if not dist.is_main:
        dist.barrier()
    data = load_recall_data(args, content)
    if dist.is_main:
        dist.barrier()
        print(
            f"== {args.dataset} ({variant}): {len(data.user_ids)} users, {len(data.item_ids)} items, "
            f"{len(data.train[0])} train / {len(data.valid[0])} valid / {len(data.test[0])} test plays, "
            f"{len(data.cold_item_ids)} cold items ({len(data.cold[0])} plays); content {content_name}",
            file=sys.stderr,
        )
    for model, seed in todo:
        cfg = RecallConfig(model=model, seed=seed, epochs=args.epochs or 200, patience=args.patience,
                           threads=threads, progress=not args.no_progress, device=args.device,
                           batch_size=batch_size)  # fmt: skip
        artifacts = fit_recall(data, cfg, dist)
        if artifacts is None:  # not rank 0
            continue
        run_dir = _save_run(args.out / "runs", args.dataset, variant, content_name, artifacts)
        key = {"dataset": args.dataset, "variant": variant, "content": content_name, "model": model, "seed": seed}
        new = result_rows(key, artifacts.metrics, data, run_dir)
        new_rows = pd.DataFrame(new, columns=COLUMNS)
        rows = pd.concat([rows, new_rows], ignore_index=True) if len(rows) else new_rows
        _write(args.out, rows)
        shown = ", ".join(f"{r['split']} recall@20={r['recall@20']:.4f}" for r in new)
        m = artifacts.metrics
        print(
            f"{model} seed {seed}: {shown}; best epoch {m['best_epoch']:.0f}, {m['train_seconds']:.0f} s",
            file=sys.stderr,
        )


def result_rows(key: dict, m: dict[str, float], data: RecallData, run_dir: Path) -> list[dict]:
    """One results.csv row per evaluated split of a run; `key` is its dataset, variant, content, model, seed."""
    rows = []
    for split in SPLITS:
        prefix = {"valid": "valid_", "test": "", "cold": "cold_"}[split]
        if f"{prefix}recall@20" not in m:
            continue
        eval_users = {"valid": data.valid, "test": data.test, "cold": data.cold}[split][0]
        rows.append({
            **key, "split": split, **{c: m[f"{prefix}{c}"] for c in METRIC_COLUMNS},
            "random_recall@20": m[f"{prefix}random_recall@20"], "best_epoch": m["best_epoch"],
            "epochs": m["epochs"], "train_seconds": round(m["train_seconds"], 2), "users": len(data.user_ids),
            "items": len(data.item_ids), "eval_users": len(np.unique(eval_users)), "run_dir": str(run_dir),
        })  # fmt: skip
    return rows


def _done(rows: pd.DataFrame, dataset: str, variant: str, content: str, model: str, seed: int) -> bool:
    if rows.empty:
        return False
    same = (rows.dataset == dataset) & (rows.variant == variant) & (rows.content == content)
    same &= (rows.model == model) & (rows.seed == seed)
    return bool(same.any())


def _save_run(runs: Path, dataset: str, variant: str, content: str, artifacts: RecallArtifacts) -> Path:
    """One servable bundle per run: its retriever files and a manifest naming the model."""
    from encore.artifacts import BundleBuilder

    run_id = f"{dataset}_{variant}_{content}_{artifacts.model}_s{artifacts.config.seed}"
    run_id = "".join(c if c.isalnum() or c in "._-" else "-" for c in run_id)
    target = runs / run_id
    if target.exists():
        import shutil

        shutil.rmtree(target)
    with BundleBuilder(runs, run_id, make_current=False) as builder:
        artifacts.component().write(builder)
        builder.manifest.update({"kind": "recall_run", "dataset": {"name": dataset, "variant": variant},
                                 "training": artifacts.launch})  # fmt: skip
    return target


# --- tables and chart ----------------------------------------------------------------------------------------


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    group = ["dataset", "variant", "content", "split", "model"]
    agg = {f"{c}_mean": (c, "mean") for c in METRIC_COLUMNS} | {f"{c}_std": (c, "std") for c in METRIC_COLUMNS}
    out = rows.groupby(group, sort=False).agg(seeds=("seed", "nunique"), best_epoch=("best_epoch", "mean"),
                                              train_seconds=("train_seconds", "mean"),
                                              random_recall=("random_recall@20", "mean"), **agg)  # fmt: skip
    return out.fillna(0.0).reset_index()


def markdown(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "No results yet.\n"
    lines = []
    for (dataset, variant, content, split), part in summarize(rows).groupby(
        ["dataset", "variant", "content", "split"], sort=False
    ):
        lines.append(f"### {dataset} ({variant}, content {content}) — {split} (mean ± std over seeds)\n")
        lines.append("| model | seeds | " + " | ".join(TABLE_METRICS) + " | best epoch | train s |")
        lines.append("|---|---:|" + "---:|" * len(TABLE_METRICS) + "---:|---:|")
        for r in part.to_dict("records"):
            cells = [f"{r[f'{c}_mean']:.4f} ± {r[f'{c}_std']:.4f}" for c in TABLE_METRICS]
            lines.append(f"| {r['model']} | {r['seeds']} | " + " | ".join(cells)
                         + f" | {r['best_epoch']:.0f} | {r['train_seconds']:.0f} |")  # fmt: skip
        lines.append(f"\nA random ranking of the same candidates: recall@20 {part.random_recall.mean():.4f}.\n")
    return "\n".join(lines)


def chart(rows: pd.DataFrame) -> bytes:
    """Recall@20 and NDCG@20 (mean ± std over seeds) per model: one panel per (dataset, split)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(rows)
    panels = [
        (k, p) for k, p in summary.groupby(["dataset", "variant", "content", "split"], sort=False) if k[3] != "valid"
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.0 * len(panels)), squeeze=False)
    for ax, ((dataset, _, content, split), part) in zip(axes[:, 0], panels, strict=True):
        x = np.arange(len(part))
        for j, metric in enumerate(("recall@20", "ndcg@20", "recall@50")):
            ax.bar(x + j * 0.27, part[f"{metric}_mean"], 0.27, yerr=part[f"{metric}_std"], capsize=2, label=metric)
        ax.axhline(part.random_recall.mean(), ls="--", c="k", lw=1, label="random recall@20")
        ax.set_xticks(x + 0.27, part.model)
        ax.set_title(f"{dataset} ({content}) — {split}", fontsize=9)
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _write(out: Path, rows: pd.DataFrame) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.csv", rows.to_csv(index=False))
    write_text_atomic(out / "results.md", markdown(rows))
    write_bytes_atomic(out / "results.png", chart(rows))
