"""The benchmark's result table: one row per (cell, seed, split); finished cells are skipped on re-run.

Files are rewritten atomically after every finished run, so an interrupted benchmark leaves only
complete rows behind.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from encore.io import write_text_atomic

KEY = ["dataset", "model", "features", "content", "seed"]
COLUMNS = [
    *KEY,
    "split",
    "auc",
    "logloss",
    "gauc",
    "best_epoch",
    "epochs",
    "train_seconds",
    "train_samples_per_s",
    "steal_pct",
    "run_dir",
]


class ResultsTable:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.csv_path = out_dir / "results.csv"
        self.rows = pd.read_csv(self.csv_path) if self.csv_path.exists() else pd.DataFrame(columns=COLUMNS)

    def done(self, dataset: str, model: str, features: str, content: str, seed: int) -> bool:
        r = self.rows
        if r.empty:
            return False
        same = (r.dataset == dataset) & (r.model == model) & (r.features == features) & (r.content == content)
        return bool((same & (r.seed == seed)).any())

    def add(self, rows: list[dict]) -> None:
        new = pd.DataFrame(rows, columns=COLUMNS)
        self.rows = new if self.rows.empty else pd.concat([self.rows, new], ignore_index=True)

    def write(self, reference_auc: dict[str, float] | None = None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.csv_path, self.rows.to_csv(index=False))
        write_text_atomic(self.out_dir / "results.md", markdown_summary(self.rows, reference_auc))


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (dataset, features, content, model, split)."""
    group = ["dataset", "features", "content", "model", "split"]
    agg = rows.groupby(group, sort=False).agg(
        seeds=("seed", "nunique"),
        auc_mean=("auc", "mean"),
        auc_std=("auc", "std"),
        logloss_mean=("logloss", "mean"),
        logloss_std=("logloss", "std"),
        best_epoch=("best_epoch", "mean"),
        samples_per_s=("train_samples_per_s", "mean"),
    )
    return agg.fillna({"auc_std": 0.0, "logloss_std": 0.0}).reset_index()


def markdown_summary(rows: pd.DataFrame, reference_auc: dict[str, float] | None = None) -> str:
    if rows.empty:
        return "No results yet.\n"
    lines = []
    summary = summarize(rows)
    for (dataset, split), part in summary.groupby(["dataset", "split"], sort=False):
        lines.append(f"### {dataset} — {split}\n")
        header = "| features | content | model | seeds | AUC | logloss | best epoch | train samples/s |"
        sep = "|---|---|---|---:|---:|---:|---:|---:|"
        if reference_auc and split == "test":
            header += " published AUC | diff |"
            sep += "---:|---:|"
        lines += [header, sep]
        for r in part.itertuples():
            line = (
                f"| {r.features} | {r.content} | {r.model} | {r.seeds} | {r.auc_mean:.4f} ± {r.auc_std:.4f} "
                f"| {r.logloss_mean:.4f} ± {r.logloss_std:.4f} | {r.best_epoch:.1f} | {r.samples_per_s:,.0f} |"
            )
            if reference_auc and split == "test":
                ref = reference_auc.get(r.model)
                line += f" {ref:.4f} | {r.auc_mean - ref:+.4f} |" if ref is not None else " – | – |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)
