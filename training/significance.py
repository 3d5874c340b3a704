"""Which differences between content settings are real: paired tests over seeds and a bootstrap over users.

- `seed_tests`: for every (features, model) cell of a grid split, a two-sided paired t-test over seeds (the same
  seed trains both settings) for dense - none, tokens - none and tokens - dense, with Holm's step-down
  correction across all of a table's comparisons (`holm`).
- `bootstrap_gauc_diff`: a percentile confidence interval for a GAUC difference from resampling users, the
  same resampled users for every run, from the per-user AUCs a run folder keeps (training/metrics.py).

    python -m training.significance collect docs/results/significance_demo     # copy the runs' per-user files
    python -m training.significance bootstrap docs/results/significance_demo --split cold --a dense --b none
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from training.metrics import PER_USER_FILE, load_per_user
from training.results import ResultsTable

ALPHA = 0.05
# (challenger, baseline): content against none, and TASTE's tokens-against-dense claim.
COMPARISONS = [("dense", "none"), ("tokens", "none"), ("tokens", "dense")]
N_BOOT = 2000  # bootstrap draws: a p of 0 means below 2 / N_BOOT
PER_USER_DIR = "per_user"  # beside a committed results.csv: <run id>.npz for each run


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m is multiplied by
    (m - k + 1), then made non-decreasing and capped at 1. NaN (an untestable comparison) stays NaN and
    does not count in m."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    testable = np.flatnonzero(~np.isnan(p))
    order = testable[np.argsort(p[testable], kind="stable")]
    m = len(order)
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def paired_test(challenger: np.ndarray, baseline: np.ndarray) -> tuple[float, float]:
    """(mean of challenger - baseline, two-sided paired t-test p). NaN p when fewer than 2 pairs or when every
    pair differs by the same amount (no spread: the t statistic is undefined)."""
    diff = np.asarray(challenger, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if len(diff) < 2 or np.ptp(diff) == 0:
        return float(diff.mean()) if len(diff) else float("nan"), float("nan")
    return float(diff.mean()), float(stats.ttest_rel(challenger, baseline).pvalue)


def seed_tests(rows: pd.DataFrame, split: str, metric: str, comparisons=COMPARISONS) -> pd.DataFrame:
    """One row per (features, model, comparison) of `split`: paired seeds, mean difference, p and Holm's p
    across every comparison of the table, and whether it is significant at ALPHA after Holm."""
    part = rows[rows.split == split]
    # One value per (features, model, seed, content); a duplicate (two variants in one table) fails here.
    by_seed = part.pivot(index=["features", "model", "seed"], columns="content", values=metric)
    out = []
    for (features, model), cell in by_seed.groupby(level=["features", "model"], sort=False):
        for challenger, baseline in comparisons:
            if challenger not in cell or baseline not in cell:
                continue
            pairs = cell[[challenger, baseline]].dropna()
            if pairs.empty:
                continue
            diff, p = paired_test(pairs[challenger].to_numpy(), pairs[baseline].to_numpy())
            out.append({"features": features, "model": model, "comparison": f"{challenger} - {baseline}",
                        "seeds": len(pairs), "diff": diff, "p": p})  # fmt: skip
    tests = pd.DataFrame(out, columns=["features", "model", "comparison", "seeds", "diff", "p"])
    tests["p_holm"] = holm(tests.p.to_numpy())
    tests["significant"] = tests.p_holm < ALPHA
    return tests


def bootstrap_gauc_diff(
    challenger: list[pd.DataFrame], baseline: list[pd.DataFrame], n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, float]:
    """GAUC(challenger) - GAUC(baseline) averaged over paired runs (one per seed, same position in both lists),
    with a (1 - ALPHA) percentile interval from resampling users with replacement.

    Each frame is one run's per-user table of one split (user, weight, auc). Only users present in every run
    are kept, and each bootstrap draw reweights the same users in every run, so the interval reflects which
    users happen to be in the evaluation set and not the seeds. `p_boot` is the two-sided share of draws on
    the far side of zero."""
    runs = [*challenger, *baseline]
    users = sorted(set.intersection(*(set(r.user) for r in runs)))
    weights = np.stack([r.set_index("user").weight.reindex(users).to_numpy(np.float64) for r in runs])  # (R, U)
    aucs = np.stack([r.set_index("user").auc.reindex(users).to_numpy(np.float64) for r in runs])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(users), np.full(len(users), 1 / len(users)), size=n_boot).astype(np.float64)

    def diffs(user_counts: np.ndarray) -> np.ndarray:  # (B, U) -> (B,): seed-mean GAUC difference per draw
        gaucs = (user_counts @ (weights * aucs).T) / (user_counts @ weights.T)  # (B, R)
        k = len(challenger)
        return (gaucs[:, :k] - gaucs[:, k:]).mean(axis=1)

    draws = diffs(counts)
    low, high = np.quantile(draws, [ALPHA / 2, 1 - ALPHA / 2])
    p_boot = min(1.0, 2 * min(float((draws <= 0).mean()), float((draws >= 0).mean())))
    point = float(diffs(np.ones((1, len(users))))[0])
    return {"diff": point, "low": float(low), "high": float(high), "p_boot": p_boot, "users": len(users)}


def _p_cell(p: float, p_holm: float) -> str:
    """Holm's p, starred when significant at ALPHA; "–" when the comparison cannot be tested."""
    if np.isnan(p_holm):
        return "–"
    shown = "<0.0001" if p_holm < 1e-4 else f"{p_holm:.4f}"
    return shown + ("*" if p_holm < ALPHA else "")


def seed_test_table(tests: pd.DataFrame, metric_label: str) -> list[str]:
    """Rows (features, model); per comparison the seed-mean difference and Holm's p, starred if significant."""
    comparisons = list(dict.fromkeys(tests.comparison))
    head = [f"{c} {metric_label} | p (Holm)" for c in comparisons]
    lines = ["| features | model | " + " | ".join(head) + " |", "|---|---|" + "---:|---:|" * len(comparisons)]
    for (features, model), cell in tests.groupby(["features", "model"], sort=False):
        by = cell.set_index("comparison")
        values = [
            f"{by.loc[c, 'diff']:+.4f} | {_p_cell(by.loc[c, 'p'], by.loc[c, 'p_holm'])}" if c in by.index else "– | –"
            for c in comparisons
        ]
        lines.append(f"| {features} | {model} | " + " | ".join(values) + " |")
    return lines


def seed_test_summary(tables: list[tuple[str, str, str, pd.DataFrame]]) -> list[str]:
    """Per (dataset, split, metric, comparison): how many cells differ at ALPHA before and after Holm, and which way."""
    lines = [
        "| dataset | split | metric | comparison | cells | p < 0.05 unadjusted (up / down) "
        "| significant after Holm (up / down) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for dataset, split, metric, tests in tables:
        for comparison, part in tests.groupby("comparison", sort=False):
            raw, holm_ = part[part.p < ALPHA], part[part.significant]
            lines.append(
                f"| {dataset} | {split} | {metric} | {comparison} | {len(part)} "
                f"| {(raw['diff'] > 0).sum()} / {(raw['diff'] < 0).sum()} "
                f"| {(holm_['diff'] > 0).sum()} / {(holm_['diff'] < 0).sum()} |"
            )
    return lines


def per_user_file(folder: Path, run_dir: str) -> Path:
    """A run's per-user file: the committed copy under `folder/per_user/`, else the one in its run folder."""
    committed = folder / PER_USER_DIR / f"{Path(run_dir).name}.npz"
    return committed if committed.exists() else Path(run_dir) / PER_USER_FILE


def collect(folder: Path) -> list[Path]:
    """Copy each run's per-user file next to `folder`'s results.csv (`per_user/<run id>.npz`), for committing."""
    written = []
    for run_dir in ResultsTable(folder).rows.run_dir.dropna().unique():
        source, target = Path(run_dir) / PER_USER_FILE, folder / PER_USER_DIR / f"{Path(run_dir).name}.npz"
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            written.append(target)
    return written


def bootstrap_table(folder: Path, split: str, challenger: str, baseline: str, n_boot: int = N_BOOT) -> pd.DataFrame:
    """`bootstrap_gauc_diff` for every (features, model) cell of `folder`'s results that has both settings, with
    the per-user files of the same seeds, beside the paired t-test over seeds on the same GAUCs."""
    rows = ResultsTable(folder).rows
    rows = rows[rows.split == split]
    out = []
    for (features, model), cell in rows.groupby(["features", "model"], sort=False):
        runs = cell.pivot(index="seed", columns="content", values="run_dir")
        if challenger not in runs or baseline not in runs:
            continue
        runs = runs[[challenger, baseline]].dropna()
        per_user = runs.map(lambda d: _split_users(per_user_file(folder, d), split))
        gaucs = cell.pivot(index="seed", columns="content", values="gauc").loc[runs.index]
        _, p_seeds = paired_test(gaucs[challenger].to_numpy(), gaucs[baseline].to_numpy())
        boot = bootstrap_gauc_diff(list(per_user[challenger]), list(per_user[baseline]), n_boot)
        out.append({"features": features, "model": model, "comparison": f"{challenger} - {baseline}",
                    "seeds": len(runs), **boot, "p_seeds": p_seeds})  # fmt: skip
    return pd.DataFrame(out)


def bootstrap_doc_table(folder: Path, splits: list[str], challenger: str, baseline: str) -> list[str]:
    """`bootstrap_table` per split in one markdown table, with Holm's correction of the seed p-values across it."""
    parts = [bootstrap_table(folder, split, challenger, baseline).assign(split=split) for split in splits]
    table = pd.concat(parts, ignore_index=True)
    table["p_seeds_holm"] = holm(table.p_seeds.to_numpy())
    lines = [
        "| split | features | model | comparison | seeds | users | GAUC diff | 95% CI over users | bootstrap p "
        "| paired t over seeds, p (Holm) |",
        "|---|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in table.to_dict("records"):
        boot_p = f"<{2 / N_BOOT:g}" if r["p_boot"] == 0 else f"{r['p_boot']:.4f}"
        lines.append(
            f"| {r['split']} | {r['features']} | {r['model']} | {r['comparison']} | {r['seeds']} | {r['users']} "
            f"| {r['diff']:+.4f} | {r['low']:+.4f} .. {r['high']:+.4f} | {boot_p} "
            f"| {_p_cell(r['p_seeds'], r['p_seeds_holm'])} |"
        )
    return lines


def _split_users(path: Path, split: str) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"no per-user AUCs at {path}: runs before per-user files, or not collected")
    users = load_per_user(path)
    return users[users.split == split]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="copy the runs' per-user AUC files into FOLDER/per_user/")
    c.add_argument("folder", type=Path)
    b = sub.add_parser("bootstrap", help="GAUC difference with a bootstrap CI over users, per (features, model)")
    b.add_argument("folder", type=Path)
    b.add_argument("--split", default="cold")
    b.add_argument("--a", default="dense", help="challenger content setting")
    b.add_argument("--b", default="none", help="baseline content setting")
    b.add_argument("--n-boot", type=int, default=N_BOOT)
    args = p.parse_args(argv)
    if args.command == "collect":
        written = collect(args.folder)
        print(f"copied {len(written)} per-user file(s) into {args.folder / PER_USER_DIR}")
        return 0
    table = bootstrap_table(args.folder, args.split, args.a, args.b, args.n_boot)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
