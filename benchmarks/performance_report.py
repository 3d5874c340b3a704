"""Render the start-up / memory results into docs/performance.md (table) and docs/performance_startup.png (chart).

    .venv/bin/python -m benchmarks.performance_report

Reads docs/results/performance/startup_memory.json (written by benchmarks/startup_memory.py) and replaces the
text between the `startup-memory` markers in docs/performance.md; nothing else in the file changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.serving_world import size_label
from encore.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "performance" / "startup_memory.json"
DOC = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "performance_startup.png"
BEGIN, END = "<!-- startup-memory:begin -->", "<!-- startup-memory:end -->"
READY_GOAL_S, PSS_GOAL_MIB = 30.0, 250.0


def table(report: dict) -> str:
    rows = {(r["catalog"], r["version"]): r for r in report["summary"]}
    lines = [
        "| catalog | version | runs | ready s (median) | PSS MiB / worker | USS MiB / worker | RSS MiB / worker "
        "| start-up CPU s | p50 / p99 ms | load avg (1 min) | ready: before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (catalog, version), r in rows.items():  # the summary's order: by catalog, versions as first run
        before = rows.get((catalog, "before"))
        # only "after" ran alternating with "before" in one command: other versions ran at another load
        ratio = f"{before['ready_s_median'] / r['ready_s_median']:.1f}x" if before and version == "after" else ""
        lines.append(
            f"| {size_label(catalog)} | {version} ({_ref(report, catalog, version)}) | {r['runs']} "
            f"| {r['ready_s_median']:.1f} "
            f"| {r['pss_mib_per_worker_median']:.0f} | {r['uss_mib_per_worker_median']:.0f} "
            f"| {r['rss_mib_per_worker_median']:.0f} | {_cpu(r)} | {_latency(r)} | {r['load_median']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def _cpu(row: dict) -> str:
    return "" if row.get("startup_cpu_s_median") is None else f"{row['startup_cpu_s_median']:.1f}"


def _latency(row: dict) -> str:
    if row.get("p50_ms_median") is None:  # runs from before the latency was recorded
        return ""
    return f"{row['p50_ms_median']:.1f} / {row['p99_ms_median']:.1f}"


def _ref(report: dict, catalog: int, version: str) -> str:
    refs = {run["ref"] for run in report["runs"] if run["version"] == version and run["catalog"] == catalog}
    return ", ".join(sorted(refs))


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, cpu, right, latency) = plt.subplots(1, 4, figsize=(19, 4.6))
    versions = list(dict.fromkeys(r["version"] for r in report["summary"]))
    for version, style in zip(versions, ("o--", "s-", "^-.", "d:", "v-", "x--"), strict=False):
        rows = sorted((r for r in report["summary"] if r["version"] == version), key=lambda r: r["catalog"])
        if not rows:
            continue
        x = [r["catalog"] for r in rows]
        left.plot(x, [r["ready_s_median"] for r in rows], style, label=version)
        right.plot(x, [r["pss_mib_per_worker_median"] for r in rows], style, label=version)
        costed = [r for r in rows if r.get("startup_cpu_s_median") is not None]
        if costed:
            cpu.plot([r["catalog"] for r in costed], [r["startup_cpu_s_median"] for r in costed], style, label=version)
        timed = [r for r in rows if r.get("p50_ms_median") is not None]
        if timed:
            latency.plot([r["catalog"] for r in timed], [r["p50_ms_median"] for r in timed], style, label=version)
    left.axhline(READY_GOAL_S, color="grey", linewidth=0.8, linestyle=":", label=f"goal {READY_GOAL_S:.0f} s at 1M")
    right.axhline(PSS_GOAL_MIB, color="grey", linewidth=0.8, linestyle=":", label=f"goal {PSS_GOAL_MIB:.0f} MiB at 10k")
    panels = (
        (left, "ranker ready (all workers), s"),
        (cpu, "start-up CPU (all processes), s"),
        (right, "PSS per worker, MiB"),
        (latency, "/recommend p50, ms (1 client, 200 candidates)"),
    )
    for axis, title in panels:
        axis.set_xscale("log")
        axis.set_xlabel("tracks in catalog")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    fig.suptitle("Ranker start-up and memory (2 workers; loaded shared 2-core VM: re-measure quiet)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main() -> int:
    report = json.loads(RESULTS.read_text())
    chart(report, CHART)
    commands = "\n".join(f".venv/bin/{c}" for c in report["commands"])
    loads = [run["load_before"][0] for run in report["runs"]]
    body = "\n".join(
        [
            BEGIN,
            "",
            "```bash",
            commands,
            ".venv/bin/python -m benchmarks.performance_report",
            "```",
            "",
            table(report),
            "",
            f"Load average (1 min) before the runs: {min(loads):.1f} to {max(loads):.1f} on "
            f"{report['machine']['cpus']} CPUs; {report['workers']} ranker workers per run. "
            "To be re-measured on a quiet machine.",
            "",
            "![ranker start-up and memory against catalog size](performance_startup.png)",
            "",
            END,
        ]
    )
    text = DOC.read_text()
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + body + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    with atomic_path(DOC) as tmp:
        tmp.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
