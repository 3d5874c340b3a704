"""The pretrained-encoder grid's tables and chart (docs/benchmarks.md), from committed result folders.

Two grids ran on the same synthetic world, protocol, code and seeds, one per `--encoder`: MFCC
(`encoder_grid_mfcc`: none, dense, tokens) and MusiCNN (`encoder_grid_musicnn`: dense, tokens). A result row
names its content setting but not its encoder (the folder does), so the tables relabel content as
"MFCC dense", "MusiCNN tokens", ... before putting the two side by side. The token ablation
(`token_ablation_musicnn`) varies the tokenized layers and K; its default cell (all layers, K 32) is the
MusiCNN grid's `tokens` cell.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from training.results import METRIC_LABELS, ResultsTable, _png, _pyplot, paired_grid_table, split_metrics, summarize
from training.significance import seed_test_table, seed_tests

ENCODER_FOLDERS = {"MFCC": "encoder_grid_mfcc", "MusiCNN": "encoder_grid_musicnn"}
ABLATION_FOLDER = "token_ablation_musicnn"
CONTENTS = ["none", "MFCC dense", "MFCC tokens", "MusiCNN dense", "MusiCNN tokens"]
MODELS = ["AFM", "DCNv2", "MaskNet", "FinalMLP", "EulerNet"]  # TASTE's cold-start models
# What the grid asks, in order: tokens against dense per encoder, then the pretrained encoder against MFCC.
COMPARISONS = [
    ("MusiCNN tokens", "MusiCNN dense"),
    ("MFCC tokens", "MFCC dense"),
    ("MusiCNN dense", "MFCC dense"),
    ("MusiCNN tokens", "MFCC tokens"),
    ("MusiCNN dense", "none"),
    ("MusiCNN tokens", "none"),
]
ABLATION_LAYERS = ["last1", "last3", "all"]
ABLATION_K = [16, 32, 64]
TOKEN_TAG = re.compile(r"\+tok-k(?P<k>\d+)-(?P<layers>[\w.]+)$")


def encoder_rows(results: Path) -> pd.DataFrame:
    """Both grids' rows, content relabelled with the encoder ("none" stays: it has no encoder)."""
    parts = []
    for label, folder in ENCODER_FOLDERS.items():
        rows = ResultsTable(results / folder).rows
        parts.append(rows.assign(content=rows.content.map(lambda c, label=label: c if c == "none" else f"{label} {c}")))
    return pd.concat(parts, ignore_index=True)


def grid_table(results: Path, split: str) -> list[str]:
    """The split's leading metrics (cold: GAUC then AUC; test: AUC then GAUC), one column per content setting."""
    metrics = split_metrics(split)[:2]
    return paired_grid_table(summarize(encoder_rows(results)), split, metrics, CONTENTS, MODELS)


def significance_table(results: Path, split: str) -> list[str]:
    """Paired t-tests over seeds of the split's leading metric, Holm across the table's comparisons."""
    metric = split_metrics(split)[0]
    tests = seed_tests(encoder_rows(results), split, metric, comparisons=COMPARISONS)
    return seed_test_table(tests, METRIC_LABELS[metric])


def answer_table(results: Path) -> list[str]:
    """Per comparison and split: how many of the (features, model) cells move up or down, raw and after Holm."""
    rows = encoder_rows(results)
    lines = [
        "| split | metric | comparison | cells | mean diff | higher / lower | significant higher / lower (Holm) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for split in ("cold", "test"):
        metric = split_metrics(split)[0]
        tests = seed_tests(rows, split, metric, comparisons=COMPARISONS)
        for comparison, part in tests.groupby("comparison", sort=False):
            real = part[part.significant]
            lines.append(
                f"| {split} | {METRIC_LABELS[metric]} | {comparison} | {len(part)} | {part['diff'].mean():+.4f} "
                f"| {(part['diff'] > 0).sum()} / {(part['diff'] < 0).sum()} "
                f"| {(real['diff'] > 0).sum()} / {(real['diff'] < 0).sum()} |"
            )
    return lines


def ablation_rows(results: Path) -> pd.DataFrame:
    """The ablation's cells plus the MusiCNN grid's default token cells of the same features and models, with
    `k` and `layers` columns parsed from the variant (no tag: K 32 over all layers)."""
    ablation = ResultsTable(results / ABLATION_FOLDER).rows
    grid = ResultsTable(results / ENCODER_FOLDERS["MusiCNN"]).rows
    keys = ablation[["features", "model"]].drop_duplicates()
    default = grid[grid.content.eq("tokens")].merge(keys, on=["features", "model"])
    rows = pd.concat([ablation, default], ignore_index=True)
    tags = rows.variant.astype(str).str.extract(TOKEN_TAG)
    return rows.assign(k=tags.k.fillna("32").astype(int), layers=tags.layers.fillna("all"))


def ablation_table(results: Path, split: str) -> list[str]:
    """Rows (features, model, tokenized layers), columns K: the split's leading metric, mean ± std over seeds."""
    metric = split_metrics(split)[0]
    rows = ablation_rows(results)
    rows = rows[rows.split == split]
    stats = rows.groupby(["features", "model", "layers", "k"])[metric].agg(["mean", "std", "count"])
    head = [f"K {k} {METRIC_LABELS[metric]}" for k in ABLATION_K]
    lines = [
        "| features | model | layers tokenized | " + " | ".join(head) + " |",
        "|---|---|---|" + "---:|" * len(head),
    ]
    for features in dict.fromkeys(rows.features):
        for model in [m for m in MODELS if m in set(rows.model)]:
            for layers in ABLATION_LAYERS:
                cells = []
                for k in ABLATION_K:
                    key = (features, model, layers, k)
                    if key not in stats.index:
                        cells.append("–")
                        continue
                    s = stats.loc[key]
                    cells.append(f"{s['mean']:.4f} ± {s['std']:.4f}" if s["count"] > 1 else f"{s['mean']:.4f} (1 seed)")
                lines.append(f"| {features} | {model} | {layers} | " + " | ".join(cells) + " |")
    return lines


def chart_png(results: Path) -> bytes:
    """Cold GAUC and warm test AUC per model (mean ± std over seeds), a bar per content setting; a panel per
    (split, feature setting)."""
    plt = _pyplot()
    summary = summarize(encoder_rows(results))
    settings = list(dict.fromkeys(summary.features))
    panels = [(split, features) for split in ("cold", "test") for features in settings]
    fig, axes = plt.subplots(2, len(settings), figsize=(6.5 * len(settings), 7.0), squeeze=False)
    width = 0.8 / len(CONTENTS)
    for ax, (split, features) in zip(axes.flat, panels, strict=True):
        metric = split_metrics(split)[0]
        part = summary[(summary.split == split) & (summary.features == features)]
        for j, content in enumerate(CONTENTS):
            cells = part[part.content == content].set_index("model")
            means = [cells[f"{metric}_mean"].get(m, np.nan) for m in MODELS]
            stds = [cells[f"{metric}_std"].get(m, 0.0) for m in MODELS]
            ax.bar(np.arange(len(MODELS)) + j * width, means, width, yerr=stds, label=content, capsize=2)
        low = np.nanmin(part[f"{metric}_mean"]) if part[f"{metric}_mean"].notna().any() else 0.5
        ax.set_ylim(max(0.0, low - 0.03), min(1.0, np.nanmax(part[f"{metric}_mean"]) + 0.03))
        ax.set_xticks(np.arange(len(MODELS)) + 0.4 - width / 2, MODELS, fontsize=8)
        ax.set_ylabel(f"{split} {METRIC_LABELS[metric]}")
        ax.set_title(f"synthetic — {'pure-cold' if split == 'cold' else 'warm test'} {METRIC_LABELS[metric]}, "
                     f"{features}", fontsize=9)  # fmt: skip
    axes[0, -1].legend(fontsize=7, loc="upper right")
    return _png(fig)
