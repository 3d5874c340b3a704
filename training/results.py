"""The benchmark's result table: one row per (cell, seed, split); finished cells are skipped on re-run.

Files are rewritten atomically after every finished run, so an interrupted benchmark leaves only
complete rows behind. results.md leads with TASTE's layout (rows: models grouped by feature setting,
columns: content setting, cells: mean ± std over seeds) and keeps the per-run detail below it;
results.png draws the same grid, and lift.png each content setting's AUC gain over `none`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from encore.io import write_bytes_atomic, write_text_atomic

KEY = ["dataset", "variant", "model", "features", "content", "seed"]
COLUMNS = [
    *KEY,
    "split",
    "auc",
    "logloss",
    "gauc",
    "oracle_auc",
    "best_epoch",
    "epochs",
    "train_seconds",
    "train_samples_per_s",
    "steal_pct",
    "run_dir",
]
CONTENT_ORDER = ["none", "dense", "tokens"]
FEATURES_ORDER = ["id", "id+cat", "id+cat+num"]  # TASTE's row groups, fewest side features first
GRID_SPLITS = ["test", "cold", "mixed"]  # valid picks the epoch; it is not a result


class ResultsTable:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.csv_path = out_dir / "results.csv"
        rows = pd.read_csv(self.csv_path) if self.csv_path.exists() else pd.DataFrame(columns=COLUMNS)
        for column in COLUMNS:  # tables written before a column existed
            if column not in rows.columns:
                rows[column] = "" if column == "variant" else np.nan
        rows["variant"] = rows["variant"].fillna("").astype(str)
        self.rows = rows[COLUMNS]

    def done(self, dataset: str, model: str, features: str, content: str, seed: int, variant: str = "") -> bool:
        r = self.rows
        if r.empty:
            return False
        same = (r.dataset == dataset) & (r.variant == variant) & (r.model == model)
        same &= (r.features == features) & (r.content == content)
        return bool((same & (r.seed == seed)).any())

    def add(self, rows: list[dict]) -> None:
        new = pd.DataFrame(rows, columns=COLUMNS)
        if self.rows.empty:
            self.rows = new
            return
        # An all-missing column (oracle AUC on real data) takes the table's dtype, not object.
        empty = {c: self.rows[c].dtype for c in COLUMNS if new[c].isna().all()}
        self.rows = pd.concat([self.rows, new.astype(empty)], ignore_index=True)

    def write(self, reference_auc: dict[str, float] | None = None, manifests: list[Path] | None = None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.csv_path, self.rows.to_csv(index=False))
        write_manifests(self.out_dir, [self.out_dir, *(manifests or [])])
        write_text_atomic(self.out_dir / "results.md", markdown_summary(self.rows, reference_auc))
        if not self.rows.empty:
            write_charts(self.out_dir, self.rows)


MANIFESTS = "manifests.jsonl"
# Left out of the committed manifests: the per-epoch history (in the run folder's manifest.json) and the weights.
MANIFEST_DROP = ("history",)


def read_manifests(folder: Path) -> dict[str, dict]:
    """run id -> compact manifest, from `folder/manifests.jsonl` and then `folder/runs/*/manifest.json`."""
    found: dict[str, dict] = {}
    path = folder / MANIFESTS
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                found[entry["run_id"]] = entry
    for manifest in sorted(folder.glob("runs/*/manifest.json")):
        entry = {k: v for k, v in json.loads(manifest.read_text()).items() if k not in MANIFEST_DROP}
        found[entry.get("run_id", manifest.parent.name)] = entry
    return found


def write_manifests(out_dir: Path, sources: list[Path]) -> None:
    """`out_dir/manifests.jsonl`: one line per run (config, data hashes, metrics, versions; no weights), small
    enough to commit beside results.csv; the first source holding a run id wins."""
    found: dict[str, dict] = {}
    for source in sources:
        for run_id, entry in read_manifests(source).items():
            found.setdefault(run_id, entry)
    if found:
        text = "".join(json.dumps(found[k], sort_keys=True) + "\n" for k in sorted(found))
        write_text_atomic(out_dir / MANIFESTS, text)


def write_charts(out_dir: Path, rows: pd.DataFrame) -> None:
    """results.png (every cell's AUC), lift.png and lift_gauc.png (the gain over `none` in AUC and GAUC)."""
    write_bytes_atomic(out_dir / "results.png", chart_png(rows))
    for metric, name in (("auc", "lift.png"), ("gauc", "lift_gauc.png")):
        lift = lift_png(rows, metric)
        if lift is not None:
            write_bytes_atomic(out_dir / name, lift)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (dataset, variant, features, content, model, split)."""
    rows = rows.assign(variant=rows["variant"].fillna("").astype(str) if "variant" in rows else "")
    group = ["dataset", "variant", "features", "content", "model", "split"]
    agg = rows.groupby(group, sort=False).agg(
        seeds=("seed", "nunique"),
        auc_mean=("auc", "mean"),
        auc_std=("auc", "std"),
        gauc_mean=("gauc", "mean"),
        gauc_std=("gauc", "std"),
        logloss_mean=("logloss", "mean"),
        logloss_std=("logloss", "std"),
        oracle_auc=("oracle_auc", "mean") if "oracle_auc" in rows else ("auc", lambda s: np.nan),
        best_epoch=("best_epoch", "mean"),
        samples_per_s=("train_samples_per_s", "mean"),
    )
    agg = agg.fillna({"auc_std": 0.0, "gauc_std": 0.0, "logloss_std": 0.0}).reset_index()
    # Row groups in TASTE's order whatever order the runs finished in; other settings keep theirs, after.
    rank = {f: i for i, f in enumerate(FEATURES_ORDER)}
    return agg.sort_values("features", key=lambda s: s.map(rank).fillna(len(rank)), kind="stable")


def _content_columns(part: pd.DataFrame) -> list[str]:
    seen = list(dict.fromkeys(part.content))
    return [c for c in CONTENT_ORDER if c in seen] + [c for c in seen if c not in CONTENT_ORDER]


def mean_std(cell: pd.Series, metric: str) -> str:
    """Mean ± std over seeds; a single seed has no spread, so the cell says "(1 seed)" instead."""
    if cell["seeds"] < 2:
        return f"{cell[metric + '_mean']:.4f} (1 seed)"
    return f"{cell[metric + '_mean']:.4f} ± {cell[metric + '_std']:.4f}"


METRIC_LABELS = {"auc": "AUC", "gauc": "GAUC", "logloss": "logloss"}


def split_metrics(split: str) -> list[str]:
    """The metrics a split's tables show, the leading one first. On pure-cold items every id-only model gives
    all cold items one OOV id, so global AUC there partly ranks users against each other; per-user GAUC does
    not, and leads."""
    if split == "cold":
        return ["gauc", "auc", "logloss"]
    return ["auc", "gauc"] + (["logloss"] if split == "mixed" else [])


def _title(dataset: str, variant: str) -> str:
    return f"{dataset} ({variant})" if variant else dataset


def grid_tables(summary: pd.DataFrame) -> list[str]:
    """TASTE's layout per (dataset, variant, split, metric): rows model within feature setting, columns content."""
    lines: list[str] = []
    for (dataset, variant, split), part in summary.groupby(["dataset", "variant", "split"], sort=False):
        if split not in GRID_SPLITS:
            continue
        contents = _content_columns(part)
        oracle = part.oracle_auc.dropna()
        for metric in split_metrics(split):
            if part[f"{metric}_mean"].isna().all():
                continue
            note = f"; exact oracle AUC {oracle.iloc[0]:.4f}" if metric == "auc" and len(oracle) else ""
            label = METRIC_LABELS[metric]
            lines.append(f"### {_title(dataset, variant)} — {split} {label} (mean ± std over seeds{note})\n")
            lines.append("| features | model | " + " | ".join(contents) + " |")
            lines.append("|---|---|" + "---:|" * len(contents))
            for (features, model), cell in part.groupby(["features", "model"], sort=False):
                by_content = cell.set_index("content")
                values = [mean_std(by_content.loc[c], metric) if c in by_content.index else "–" for c in contents]
                lines.append(f"| {features} | {model} | " + " | ".join(values) + " |")
            lines.append("")
    return lines


def paired_grid_table(summary: pd.DataFrame, split: str, metrics: list[str], contents: list[str] | None = None,
                      models: list[str] | None = None) -> list[str]:  # fmt: skip
    """One table of a split with a block of content columns per metric (docs: GAUC beside AUC)."""
    part = summary[summary.split == split]
    if models is not None:
        part = part[part.model.isin(models)]
    contents = contents or _content_columns(part)
    head = [f"{c} {METRIC_LABELS[m]}" for m in metrics for c in contents]
    lines = ["| features | model | " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(head)]
    order = models or list(dict.fromkeys(part.model))
    for features in dict.fromkeys(part.features):
        for model in order:
            cell = part[(part.features == features) & (part.model == model)].set_index("content")
            if cell.empty:
                continue
            values = [mean_std(cell.loc[c], m) if c in cell.index else "–" for m in metrics for c in contents]
            lines.append(f"| {features} | {model} | " + " | ".join(values) + " |")
    return lines


# TASTE's published pattern is tokens >= dense > none: (challenger, baseline, the order TASTE claims).
PATTERN_PAIRS = [("dense", "none", ">"), ("tokens", "none", ">"), ("tokens", "dense", ">=")]


def pattern_counts(summary: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """How often each content setting beats another, counted over (features, model) cells by seed mean.

    One row per (dataset, variant, split, features, modality, comparison): cells compared, wins, mean and
    range of the `metric` difference. Each feature setting is counted on its own, since content should matter
    most where the fewest side features describe an item, and, when there are several, also pooled as
    "all". A modality is a content prefix: "" for dense/tokens, "text-" for text-dense/...
    """
    out = []
    for (dataset, variant, split), part in summary.groupby(["dataset", "variant", "split"], sort=False):
        if split not in GRID_SPLITS:
            continue
        pooled = part.pivot_table(index=["features", "model"], columns="content", values=f"{metric}_mean")
        settings = list(dict.fromkeys(part.features))
        groups = [(f, pooled.xs(f, level="features", drop_level=False)) for f in settings if f in pooled.index]
        if len(settings) > 1:
            groups.append(("all", pooled))
        prefixes = sorted({c[: -len("dense")] for c in pooled.columns if c.endswith("dense")})
        for features, values in groups:
            for prefix in prefixes:
                for challenger, base, op in PATTERN_PAIRS:
                    a, b = (c if c == "none" else prefix + c for c in (challenger, base))
                    if a not in values or b not in values:
                        continue
                    diff = (values[a] - values[b]).dropna()
                    if diff.empty:
                        continue
                    wins = int((diff >= 0).sum() if op == ">=" else (diff > 0).sum())
                    out.append({
                        "dataset": dataset, "variant": variant, "split": split, "features": features,
                        "comparison": f"{a} {op} {b}", "cells": len(diff), "wins": wins,
                        "mean_diff": diff.mean(), "min_diff": diff.min(), "max_diff": diff.max(),
                    })  # fmt: skip
    return pd.DataFrame(out)


def pattern_table(summary: pd.DataFrame, with_variant: bool = True) -> list[str]:
    """The pattern counts on AUC and, beside them, on per-user GAUC (cold splits lead with GAUC)."""
    auc = pattern_counts(summary, "auc")
    if auc.empty:
        return []
    gauc = pattern_counts(summary, "gauc") if summary["gauc_mean"].notna().any() else pd.DataFrame()
    key = ["dataset", "variant", "split", "features", "comparison"]
    both = auc.merge(gauc, on=key, how="left", suffixes=("", "_g")) if not gauc.empty else auc
    lines = [
        "| dataset | split | features | comparison | AUC holds in | mean AUC diff | AUC range "
        "| GAUC holds in | mean GAUC diff | GAUC range |",
        "|---|---|---|---|---:|---:|---|---:|---:|---|",
    ]
    for r in both.to_dict("records"):
        title = _title(r["dataset"], r["variant"]) if with_variant else r["dataset"]
        line = (f"| {title} | {r['split']} | {r['features']} | {r['comparison']} | {r['wins']} / {r['cells']} "
                f"| {r['mean_diff']:+.4f} | {r['min_diff']:+.4f} .. {r['max_diff']:+.4f} |")  # fmt: skip
        if pd.notna(r.get("cells_g")):
            line += (f" {int(r['wins_g'])} / {int(r['cells_g'])} | {r['mean_diff_g']:+.4f} "
                     f"| {r['min_diff_g']:+.4f} .. {r['max_diff_g']:+.4f} |")  # fmt: skip
        else:
            line += " – | – | – |"
        lines.append(line)
    return lines


def markdown_summary(rows: pd.DataFrame, reference_auc: dict[str, float] | None = None) -> str:
    if rows.empty:
        return "No results yet.\n"
    summary = summarize(rows)
    lines = grid_tables(summary)
    pattern = pattern_table(summary)
    if pattern:
        lines += [
            "### TASTE's pattern (tokens >= dense > none), counted over (features, model) cells by seed mean\n",
            *pattern,
            "",
        ]
    if lines:
        lines += ["## Detail per split\n"]
    for (dataset, variant, split), part in summary.groupby(["dataset", "variant", "split"], sort=False):
        lines.append(f"### {_title(dataset, variant)} — {split}\n")
        header = "| features | content | model | seeds | AUC | GAUC | logloss | best epoch | train samples/s |"
        sep = "|---|---|---|---:|---:|---:|---:|---:|---:|"
        has_oracle = part.oracle_auc.notna().any()
        if has_oracle:
            header += " oracle AUC (exact) |"
            sep += "---:|"
        if reference_auc and split == "test":
            header += " published AUC | diff |"
            sep += "---:|---:|"
        lines += [header, sep]
        for r in part.itertuples():
            gauc = "–" if pd.isna(r.gauc_mean) else f"{r.gauc_mean:.4f} ± {r.gauc_std:.4f}"
            line = (
                f"| {r.features} | {r.content} | {r.model} | {r.seeds} | {r.auc_mean:.4f} ± {r.auc_std:.4f} "
                f"| {gauc} | {r.logloss_mean:.4f} ± {r.logloss_std:.4f} | {r.best_epoch:.1f} "
                f"| {r.samples_per_s:,.0f} |"
            )
            if has_oracle:
                line += f" {r.oracle_auc:.4f} |"
            if reference_auc and split == "test":
                ref = reference_auc.get(r.model)
                line += f" {ref:.4f} | {r.auc_mean - ref:+.4f} |" if ref is not None else " – | – |"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display here; must come before pyplot
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def chart_png(rows: pd.DataFrame) -> bytes:
    """Grouped bars of AUC (mean ± std over seeds): one panel per (dataset, variant, split), oracle dashed."""
    plt = _pyplot()
    summary = summarize(rows)
    panels = [(key, part) for key, part in summary.groupby(["dataset", "variant", "split"], sort=False)]
    panels = [(k, p) for k, p in panels if k[2] in GRID_SPLITS] or panels
    n_groups = max(len(set(zip(p.features, p.model, strict=True))) for _, p in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(10, 0.5 * n_groups), 3.2 * len(panels)), squeeze=False)
    for ax, ((dataset, variant, split), part) in zip(axes[:, 0], panels, strict=True):
        contents = _content_columns(part)
        groups = list(dict.fromkeys(zip(part.features, part.model, strict=True)))
        width = 0.8 / len(contents)
        for j, content in enumerate(contents):
            cells = part[part.content == content].set_index(["features", "model"])
            means = [cells.auc_mean.get(g, np.nan) for g in groups]
            stds = [cells.auc_std.get(g, 0.0) for g in groups]
            ax.bar(np.arange(len(groups)) + j * width, means, width, yerr=stds, label=content, capsize=2)
        oracle = part.oracle_auc.dropna()
        if len(oracle):
            ax.axhline(oracle.iloc[0], ls="--", c="k", lw=1, label="oracle")
        low = float(np.nanmin(part.auc_mean)) if part.auc_mean.notna().any() else 0.5
        ax.set_ylim(max(0.0, low - 0.05), 1.0)
        one_setting = len({f for f, _ in groups}) == 1  # then the title names it, the ticks name the models
        labels = [m if one_setting else f"{f}\n{m}" for f, m in groups]
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, labels, fontsize=7)
        ax.set_ylabel("AUC")
        title = f"{dataset} {variant} — {split}" + (f" ({groups[0][0]})" if one_setting else "")
        ax.set_title(title.replace("  ", " "), fontsize=9)
        ax.legend(fontsize=7, ncol=len(contents) + 1)
    return _png(fig)


def lift_png(rows: pd.DataFrame, metric: str = "auc") -> bytes | None:
    """`metric` gain of each content setting over `none` (seed means), per model: a row of panels per (dataset,
    variant, split), cold first, and a column per feature setting, so where content matters stands out.
    None when the grid has no `none` cells or nothing to compare with them."""
    plt = _pyplot()
    summary = summarize(rows)
    summary = summary[summary.split.isin(["cold", "test"]) & summary[f"{metric}_mean"].notna()]
    if "none" not in set(summary.content) or set(summary.content) == {"none"}:
        return None
    summary = summary.sort_values("split", key=lambda s: s.map({"cold": 0, "test": 1}), kind="stable")
    panel_rows = list(summary.groupby(["dataset", "variant", "split"], sort=False))
    settings = list(dict.fromkeys(summary.features))
    size = (4.5 * len(settings), 2.8 * len(panel_rows))
    # One scale per row, so the feature settings compare at a glance.
    fig, axes = plt.subplots(len(panel_rows), len(settings), figsize=size, squeeze=False, sharey="row")
    for i, ((dataset, variant, split), part) in enumerate(panel_rows):
        auc = part.pivot_table(index=["features", "model"], columns="content", values=f"{metric}_mean", sort=False)
        challengers = [c for c in _content_columns(part) if c != "none"]
        for j, features in enumerate(settings):
            ax = axes[i, j]
            if features not in auc.index.get_level_values("features"):
                ax.set_axis_off()
                continue
            cell = auc.xs(features, level="features")
            width = 0.8 / len(challengers)
            for k, content in enumerate(challengers):
                ax.bar(np.arange(len(cell)) + k * width, cell[content] - cell["none"], width, label=f"{content} - none")
            ax.axhline(0.0, c="k", lw=0.8)
            ax.set_xticks(np.arange(len(cell)) + 0.4 - width / 2, cell.index, rotation=90, fontsize=7)
            ax.set_title(f"{dataset} {variant} — {split}, {features}".replace("  ", " "), fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{METRIC_LABELS[metric]} gain over none")
        axes[i, -1].legend(fontsize=7, loc="upper right")
    return _png(fig)


def merge(sources: list[Path], out_dir: Path) -> ResultsTable:
    """One table from grids run as separate processes (e.g. one per feature setting); a cell found in more
    than one source keeps the first source's rows, so a re-run never double-counts a seed."""
    table = ResultsTable(out_dir)
    for source in sources:
        rows = ResultsTable(source).rows
        if rows.empty:
            continue
        seen = table.rows[KEY].astype(str).agg("|".join, axis=1) if not table.rows.empty else pd.Series(dtype=str)
        fresh = ~rows[KEY].astype(str).agg("|".join, axis=1).isin(set(seen))
        table.add(rows[fresh].to_dict("records"))
    table.write(manifests=sources)
    return table


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        description="Merge benchmark result folders into one results.csv/md/png; or regenerate the docs' tables.",
        epilog="--write-docs rewrites every generated table in docs/*.md and every docs/results/*/results.md "
        "from the committed CSVs (training/doc_tables.py); --check-docs lists those that differ (exit 1).",
    )
    p.add_argument("sources", nargs="*", type=Path, help="result folders holding results.csv")
    p.add_argument("--out", type=Path, help="output folder (its own results.csv is kept and extended)")
    p.add_argument("--write-docs", action="store_true", help="regenerate the docs' tables from committed CSVs")
    p.add_argument("--check-docs", action="store_true", help="fail when a docs table differs from its CSV")
    p.add_argument("--charts", action="store_true", help="with --write-docs: also redraw each folder's charts")
    args = p.parse_args(argv)
    if args.write_docs or args.check_docs:
        from training.doc_tables import stale_files, write_docs

        changed = write_docs(args.charts) if args.write_docs else stale_files()
        verb = "rewrote" if args.write_docs else "stale"
        for path in changed:
            print(f"{verb}: {path}")
        print(f"{len(changed)} file(s) {verb}" if changed else "every docs table matches its CSV")
        return 1 if changed and args.check_docs else 0
    if not args.sources or args.out is None:
        p.error("give result folders and --out, or --write-docs / --check-docs")
    missing = [str(s) for s in args.sources if not (s / "results.csv").is_file()]
    if missing:
        raise SystemExit(f"error: no results.csv in {', '.join(missing)}")
    table = merge(args.sources, args.out)
    print(f"wrote {args.out / 'results.csv'} ({len(table.rows)} rows), results.md and the charts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
