"""The Encore-vs-FuxiCTR tables in docs/, rendered from the committed side-by-side CSV.

`benchmarks/ctr_vs_fuxictr.py --record docs/results/ctr_vs_fuxictr_fp32/side_by_side.csv` upserts one row per
(model, epoch cap, threads, Encore precision, FuxiCTR loader); `python -m training.results --write-docs` turns it
into the speed and accuracy tables of docs/benchmarks.md and the summary of docs/performance.md. The same folder holds
further seeds (SEEDS_CSV), the speed runs of a second host (SECOND_HOST_CSV) and the training-parity runs
(benchmarks/fuxictr_train_parity.py, PARITY_GLOB), each with its table here.

A row whose epoch cap is below the BARS protocol's (`max_epochs` < FULL_EPOCHS) is a speed measurement: its AUC
is an early-training number and only its samples/s count. A full-protocol row (up to 100 or 200 epochs with early
stopping) is the accuracy comparison; its samples/s come from a long run beside other jobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

FOLDER = "ctr_vs_fuxictr_fp32"
CSV_NAME = "side_by_side.csv"
SECOND_HOST_CSV = "speed_second_host.csv"  # the same speed runs on another host (CPU named in docs/benchmarks.md)
COMPILE_CSV = "compile_steps.csv"  # benchmarks/ctr_step_cpu.py --compile --record: CPU ms per step, three ways
SEEDS_CSV = "seeds.csv"  # full runs of further seeds (`--seed S --record` to a file of its own: the side-by-side
# CSV keeps one row per model and protocol)
FULL_EPOCHS = 100  # the BARS cap (NFM: 200); a smaller cap marks a speed-only run
GOAL_RATIO = 2.0
GOAL_AUC_DIFF = 0.001
CONFIG = Path(__file__).resolve().parent / "configs" / "frappe.json"


def load(results: Path, csv_name: str = CSV_NAME) -> pd.DataFrame:
    """The recorded rows in the config's model order (the order of the Frappe table)."""
    rows = pd.read_csv(results / FOLDER / csv_name)
    # Rows recorded before --fuxictr-loader existed ran FuxiCTR's own (Ray) loader.
    rows["fuxictr_loader"] = rows.get("fuxictr_loader", pd.Series(index=rows.index, dtype=object)).fillna("ray")
    order = {m: i for i, m in enumerate(json.loads(CONFIG.read_text())["models"])}
    rows["_order"] = rows.model.map(order)
    return rows.sort_values(["_order", "fuxictr_loader", "max_epochs"], kind="stable").drop(columns="_order")


def _bars() -> dict[str, float]:
    models = json.loads(CONFIG.read_text())["models"]
    return {m: c["bars_test_auc"] for m, c in models.items() if "bars_test_auc" in c}


def _num(value: object, fmt: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, fmt)


def _pair(row: pd.Series, key: str, fmt: str) -> str:
    return f"{_num(row.get('fuxictr_' + key), fmt)} / {_num(row.get('encore_' + key), fmt)}"


def speed_table(results: Path, csv_name: str = CSV_NAME) -> list[str]:
    """Training samples/s side by side, one row per speed run (epoch-capped); FuxiCTR always fp32, Encore fp32
    unless the row says bf16 (CPU autocast of the forward pass, the further option)."""
    rows = load(results, csv_name)
    rows = rows[rows.max_epochs < FULL_EPOCHS]
    lines = [
        "| model | FuxiCTR loader | epochs | Encore precision | FuxiCTR samples/s | Encore samples/s "
        "| Encore / FuxiCTR | >= 2x | load avg F / E | others' CPU % F / E | steal % F / E | finished (UTC) |",
        "|---|---|---:|---|---:|---:|---:|:---:|---|---|---|---|",
    ]
    for _, r in rows.iterrows():
        ratio = r.get("throughput_ratio")
        lines.append(
            f"| {r.model} | {r.fuxictr_loader} | {r.max_epochs} | {r.encore_precision} "
            f"| {_num(r.fuxictr_samples_per_s, ',.0f')} "
            f"| {_num(r.get('encore_samples_per_s'), ',.0f')} | **{_num(ratio, '.2f')}x** "
            f"| {'yes' if ratio >= GOAL_RATIO else 'no'} | {_pair(r, 'load_median', '.0f')} "
            f"| {_pair(r, 'others_cpu_pct', '.0f')} | {_pair(r, 'steal_pct_median', '.1f')} "
            f"| {str(r.get('finished_utc', ''))[11:16]} |"
        )
    return lines


def compile_table(results: Path) -> list[str]:
    """CPU time per training step: Encore eager, Encore under torch.compile and FuxiCTR (each the least disturbed of
    its timed blocks), and FuxiCTR's time over each of Encore's."""
    rows = pd.read_csv(results / FOLDER / COMPILE_CSV)
    lines = [
        "| model | FuxiCTR ms/step | Encore ms/step | Encore compiled ms/step | compiled / eager "
        "| FuxiCTR / Encore | FuxiCTR / Encore compiled | >= 2x compiled | load (1 min) | finished (UTC) |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---|---|",
    ]
    for _, r in rows.iterrows():
        compiled = r.fuxictr_ms / r.encore_compiled_ms
        lines.append(
            f"| {r.model} | {r.fuxictr_ms:.1f} | {r.encore_ms:.1f} | {r.encore_compiled_ms:.1f} "
            f"| {r.encore_ms / r.encore_compiled_ms:.2f}x | {r.fuxictr_ms / r.encore_ms:.2f}x | **{compiled:.2f}x** "
            f"| {'yes' if compiled >= GOAL_RATIO else 'no'} | {r.load_1min} | {str(r.finished_utc)[11:16]} |"
        )
    return lines


def accuracy_table(results: Path) -> list[str]:
    """Test AUC of full BARS-protocol runs on both sides, beside BARS's published AUC."""
    rows = load(results)
    rows = rows[rows.max_epochs >= FULL_EPOCHS]
    bars = _bars()
    lines = [
        "| model | BARS test AUC | FuxiCTR test AUC | Encore test AUC | Encore - FuxiCTR | FuxiCTR - BARS "
        "| Encore - BARS | epochs F / E | best epoch F / E | FuxiCTR loader |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for _, r in rows.iterrows():
        ref = bars.get(r.model)
        fx, en = r.fuxictr_test_auc, r.get("encore_test_auc")
        lines.append(
            f"| {r.model} | {_num(ref, '.4f')} | {fx:.5f} | {_num(en, '.5f')} | {_num(en - fx, '+.5f')} "
            f"| {_num(fx - ref if ref else None, '+.4f')} | {_num(en - ref if ref else None, '+.4f')} "
            f"| {int(r.fuxictr_epochs)} / {_num(r.get('encore_epochs'), '.0f')} "
            f"| {int(r.fuxictr_best_epoch)} / {_num(r.get('encore_best_epoch'), '.0f')} | {r.fuxictr_loader} |"
        )
    return lines


def seeds_table(results: Path) -> list[str]:
    """Full runs of a model over several seeds on both sides: seed 2021 from the side-by-side CSV, the others from
    SEEDS_CSV; per model, each seed, then the mean and standard deviation over seeds and Welch's t-test of the two
    sides' AUCs (the difference column pairs runs by seed number only: the same seed draws unrelated weights,
    masks and batches in the two libraries)."""
    extra = pd.read_csv(results / FOLDER / SEEDS_CSV)
    first = load(results)
    first = first[(first.max_epochs >= FULL_EPOCHS) & first.model.isin(extra.model)]
    rows = pd.concat([first, extra], ignore_index=True).sort_values(["model", "seed"], kind="stable")
    lines = [
        "| model | seed | FuxiCTR test AUC | Encore test AUC | Encore - FuxiCTR | epochs F / E; test |",
        "|---|---|---:|---:|---:|---|",
    ]
    for model, runs in rows.groupby("model", sort=False):
        diff = runs.encore_test_auc - runs.fuxictr_test_auc
        for _, r in runs.iterrows():
            lines.append(
                f"| {model} | {int(r.seed)} | {r.fuxictr_test_auc:.5f} | {r.encore_test_auc:.5f} "
                f"| {r.encore_test_auc - r.fuxictr_test_auc:+.5f} | {int(r.fuxictr_epochs)} / {int(r.encore_epochs)} |"
            )
        # Welch's t, not a paired one: seed s draws unrelated initial weights, masks and batches on the two sides.
        p = (
            stats.ttest_ind(runs.encore_test_auc, runs.fuxictr_test_auc, equal_var=False).pvalue
            if len(runs) > 1
            else None
        )
        lines.append(
            f"| {model} | mean ± std over {len(runs)} | {runs.fuxictr_test_auc.mean():.5f} ± "
            f"{runs.fuxictr_test_auc.std():.5f} | {runs.encore_test_auc.mean():.5f} ± {runs.encore_test_auc.std():.5f} "
            f"| {diff.mean():+.5f} ± {diff.std():.5f} | Welch t p = {_num(p, '.2f')} |"
        )
    return lines


def summary_table(results: Path) -> list[str]:
    """One line per model for docs/performance.md: the latest speed run's ratio and the full run's AUC gap."""
    rows = load(results)
    speed = rows[rows.max_epochs < FULL_EPOCHS]
    # One row per model: the in-memory-loader run where there is one (FuxiCTR's faster side, the fairer ratio).
    speed = speed.assign(_memory=speed.fuxictr_loader.eq("memory")).sort_values("_memory", kind="stable")
    speed = speed.groupby("model", sort=False).tail(1)
    speed = rows.loc[[i for i in rows.index if i in set(speed.index)]]  # back in the table's model order
    full = rows[rows.max_epochs >= FULL_EPOCHS].groupby("model", sort=False).tail(1).set_index("model")
    lines = [
        "| model | Encore / FuxiCTR samples/s (fp32, 1 thread each) | >= 2x | test AUC Encore - FuxiCTR (full run) |",
        "|---|---:|:---:|---:|",
    ]
    for _, r in speed.iterrows():
        diff = full.loc[r.model, "auc_diff"] if r.model in full.index else None
        lines.append(
            f"| {r.model} | {_num(r.get('throughput_ratio'), '.2f')}x "
            f"| {'yes' if r.get('throughput_ratio', 0) >= GOAL_RATIO else 'no'} | {_num(diff, '+.5f')} |"
        )
    return lines


PARITY_GLOB = "train_parity_*.json"  # benchmarks/fuxictr_train_parity.py --out, one file per run


def _parity_results(results: Path) -> list[tuple[str, bool, int, dict]]:
    """(model, is the control run, seed, that model's result) of every committed parity run, in the config's model
    order, Encore's run before the control."""
    order = list(json.loads(CONFIG.read_text())["models"])
    rows = []
    for path in sorted((results / FOLDER).glob(PARITY_GLOB)):
        run = json.loads(path.read_text())
        rows += [(model, run.get("control", False), run["seed"], r) for model, r in run["results"].items()]
    return sorted(rows, key=lambda row: (order.index(row[0]), row[1]))


def parity_table(results: Path) -> list[str]:
    """Training from the same weights on the same batches, dropout off (benchmarks/fuxictr_train_parity.py): per
    model, FuxiCTR against Encore and, as the control, FuxiCTR against itself from initial weights 1e-7 apart;
    the largest loss gap of the first 50 steps, both validation AUCs after the last epoch and the largest AUC gap of
    any epoch."""
    lines = [
        "| model | against | seed | max abs loss gap, first 50 steps | epochs | FuxiCTR valid AUC | other valid AUC "
        "| max abs AUC gap, any epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, control, seed, result in _parity_results(results):
        last = result["epochs"][-1]
        gap = max(abs(e["valid_auc_other"] - e["valid_auc_fuxictr"]) for e in result["epochs"])
        lines.append(
            f"| {model} | {'FuxiCTR, 1e-7 apart' if control else 'Encore'} | {seed} "
            f"| {result['max_abs_loss_diff_first_50_steps']:.1e} | {last['epoch']} | {last['valid_auc_fuxictr']:.6f} "
            f"| {last['valid_auc_other']:.6f} | {gap:.1e} |"
        )
    return lines


def parity_chart_png(results: Path) -> bytes:
    """|loss gap| per training step of each parity model (log scale): FuxiCTR against Encore, and FuxiCTR against
    itself from initial weights 1e-7 apart (the control); one panel per model."""
    from training.results import _png, _pyplot

    plt = _pyplot()
    runs = _parity_results(results)
    models = list(dict.fromkeys(model for model, *_ in runs))
    cols = 3
    fig, axes = plt.subplots((len(models) + cols - 1) // cols, cols, figsize=(12, 2.6 * ((len(models) + 2) // 3)),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, model in zip(axes.flat, models, strict=False):
        for _, control, _, result in (row for row in runs if row[0] == model):
            losses = np.asarray(result["step_losses"])
            gap = np.maximum(np.abs(losses[:, 0] - losses[:, 1]), 1e-9)  # log scale: an exact 0 drawn at 1e-9
            label = "FuxiCTR vs itself, 1e-7 apart" if control else "FuxiCTR vs Encore"
            ax.semilogy(np.arange(1, len(gap) + 1), gap, lw=0.8, label=label)
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("training step (50 per epoch)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("|loss gap|", fontsize=8)
    for ax in list(axes.flat)[len(models) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Same initial weights, same batches, dropout off: the training losses drift apart", fontsize=10)
    fig.tight_layout()
    return _png(fig)
