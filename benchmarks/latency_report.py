"""Render the /recommend before/after results and the embedder throughput results into docs/performance.md.

    .venv/bin/python -m benchmarks.latency_report

Reads docs/results/performance/serving_latency.json (benchmarks/recommend_profile.py; the HTTP-against-in-process
retrieval run in docs/results/performance/inprocess/) and
embedder_throughput.json (benchmarks/embedder_throughput.py) and replaces the text between their markers
(`serving-latency`, `embedder-throughput`) in docs/performance.md; nothing else in the file changes. A block
whose markers are missing is appended at the end of the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from encore.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "performance"
DOC = ROOT / "docs" / "performance.md"
STEPS = (
    ("user_features_ms", "user profile + recent events (store reads)"),
    ("retrieve_ms", "retrieval, 200 candidates (the retriever's HTTP call, or its search in process)"),
    ("item_features_ms", "item gather (track table)"),
    ("score_ms", "score: encode + ONNX"),
    ("onnx_ms", "of which the ONNX call"),
    ("order_ms", "order: top-k, reasons"),
    ("outside_recommend_ms", "outside the pipeline: routing, dependencies, response JSON, middleware"),
    ("wall_p50_ms", "**whole request, p50** (wall)"),
    ("wall_p99_ms", "whole request, p99 (wall)"),
    ("cpu_p50_ms", "**whole request, p50, CPU of the serving thread**"),
    ("onnx_floor_ms", "floor: bare `session.run`, 200 rows (median)"),
)
EMBED_STAGES = (
    ("decode_ms", "decode"),
    ("encode_resample_ms", "resample"),
    ("encode_mel_ms", "mel"),
    ("encode_network_ms", "network (ONNX)"),
    ("encode_rest_ms", "tokens, tags"),
    ("store_ms", "store write"),
)


def _ratio(before: float | None, after: float | None) -> str:
    return f"{before / after:.2f}x" if before and after else ""


def serving_block(report: dict) -> list[str]:
    by = {row["version"]: row for row in report["summary"]}
    before, after = by.get("before", {}), by.get("after", {})
    modes = report.get("retrieval", {})  # recommend_profile --retrieval: each side's ENCORE_RANKER_RETRIEVAL
    precisions = report.get("precision", {})  # and --precision: each side's ENCORE_RANKER_PRECISION
    refs = ", ".join(
        f"{side} `{row.get('ref', '?')}`"
        + (f" with {modes[side]} retrieval" if side in modes else "")
        + (f", {precisions[side]} ranker" if side in precisions else "")
        for side, row in (("before", before), ("after", after))
    )
    lines = [
        "```bash",
        f".venv/bin/{report['command']}",
        ".venv/bin/python -m benchmarks.latency_report",
        "```",
        "",
        f"In process, {report['catalog']:,}-track catalog, {report['candidates']} candidates, k=20, "
        f"{report.get('ranker', 'untrained')} ranker ({refs}; "
        f"medians over {before.get('runs', 0)} runs each, ms per request):",
        "",
        "| step | before | after | before / after |",
        "|---|---|---|---|",
    ]
    for key, name in STEPS:
        b, a = before.get(f"inprocess.{key}"), after.get(f"inprocess.{key}")
        lines.append(f"| {name} | {_fmt(b)} | {_fmt(a)} | {_ratio(b, a)} |")
    lines += [
        "",
        f"HTTP, ranker {report['ranker_workers']} workers + retriever 1 worker, load generator in the benchmark "
        "process (CPU per request read from each process around the phase):",
        "",
        "| version | clients | requests | req/s | p50 ms | p90 ms | p99 ms | ranker CPU ms/req | retriever CPU ms/req "
        "| load generator CPU ms/req | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in ("one_client", "concurrent"):
        for name, row in (("before", before), ("after", after)):
            get = lambda key, row=row, phase=phase: row.get(f"{phase}.{key}")  # noqa: E731
            lines.append(
                f"| {name} | {_fmt(get('clients'), 0)} | {_fmt(get('requests_ok'), 0)} | {_fmt(get('rps'), 1)} "
                f"| {_fmt(get('p50_ms'))} | {_fmt(get('p90_ms'))} | {_fmt(get('p99_ms'))} "
                f"| {_fmt(get('ranker_cpu_ms_per_request'))} | {_fmt(get('retriever_cpu_ms_per_request'))} "
                f"| {_fmt(get('load_generator_cpu_ms_per_request'))} | {_fmt(get('loadavg_1m_before'), 1)} |"
            )
    loads = [x for run in report["runs"] for x in (run["loadavg_before"][0], run["loadavg_after"][0])]
    lines += [
        "",
        f"Load average (1 min) at the start and end of each run: {min(loads):.1f} to {max(loads):.1f} on "
        f"{report['machine']['cpus']} CPUs"
        + (" (other jobs shared the machine)." if max(loads) > report["machine"]["cpus"] + 1 else ": no other jobs."),
    ]
    return lines


def embedder_block(report: dict) -> list[str]:
    lines = [
        "```bash",
        f".venv/bin/{report['command']}",
        ".venv/bin/python -m benchmarks.latency_report",
        "```",
        "",
        f"{len(report['clips'])} real clips of {report['clip_seconds']:.0f} s ({', '.join(report['clips'])}), "
        f"{report['encoder']}; per upload, mean ms (share of the mean upload latency):",
        "",
        "| concurrency | uploads | uploads/s | latency p50 s | "
        + " | ".join(name for _, name in EMBED_STAGES)
        + " | rest (HTTP, read, notify, waiting) | embedder CPU s / upload | load avg (1 min) |",
        "|---" * (7 + len(EMBED_STAGES)) + "|",
    ]
    for p in report["phases"]:
        mean = p["latency_mean_ms"] or 1.0
        cells = [f"{p[key]:.0f} ({100 * p[key] / mean:.1f}%)" for key, _ in EMBED_STAGES]
        rest = p["read_ms"] + p["notify_ms"] + p["other_ms"]
        lines.append(
            f"| {p['concurrency']} | {p['uploads_ok']} | {p['uploads_per_s']:.3f} | {p['latency_p50_ms'] / 1000:.2f} | "
            + " | ".join(cells)
            + f" | {rest:.0f} ({100 * rest / mean:.1f}%) | {p['embedder_cpu_s_per_upload']:.2f} "
            f"| {p['loadavg_1m_before']:.1f} to {p['loadavg_1m_after']:.1f} |"
        )
    return lines


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def replace_block(text: str, name: str, body: list[str]) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = "\n".join([begin, "", *body, "", end])
    if begin in text:
        return text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def main() -> int:
    text = DOC.read_text()
    for name, file, render in (
        ("serving-latency", "serving_latency.json", serving_block),
        ("serving-latency-inprocess", "inprocess/serving_latency.json", serving_block),  # --out <RESULTS>/inprocess
        ("serving-latency-int8", "int8/serving_latency.json", serving_block),  # --out <RESULTS>/int8
        ("serving-latency-int8-trained", "int8_trained/serving_latency.json", serving_block),  # and --trained
        ("serving-latency-hotpath", "hotpath/serving_latency.json", serving_block),  # code against code, int8 trained
        ("serving-latency-hotpath-defaults", "hotpath_defaults/serving_latency.json", serving_block),  # fp32, http
        ("embedder-throughput", "embedder_throughput.json", embedder_block),
    ):
        path = RESULTS / file
        if path.exists():
            text = replace_block(text, name, render(json.loads(path.read_text())))
    with atomic_path(DOC) as tmp:
        tmp.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
