"""The arithmetic of docs/scaling.md: per-node numbers measured here -> nodes for 100M tracks, 10M users and
1B events per month. Every input is either a measurement (with the committed file or doc it comes from) or a
stated assumption; the output is docs/results/scaling/scaling.json and the tables in scaling.md.

    .venv/bin/python -m benchmarks.scaling_model --out docs/results/scaling

Inputs read from committed results: docs/results/redis_cluster/results.json (bytes per track and user, Feast
write/read rates, failover), docs/results/extract_engines/results.json (files/s). The serving, retrieval and
trainer numbers are the ones docs/performance.md and docs/benchmarks.md report (quoted below with their place).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]

TARGET = {"tracks": 100_000_000, "users": 10_000_000, "events_per_month": 1_000_000_000}

# Quoted measurements (2 vCPU AMD EPYC development VM) and where they are documented.
QUOTED = {
    "ranker_req_per_s_2vcpu": (381.4, "docs/performance.md: HTTP /recommend, 16 clients, 2 ranker workers, quiet"),
    "track_table_load_s_per_1m": (400.0, "docs/performance.md: track table of 1M tracks loaded + encoded"),
    "encoded_inputs_bytes_per_track": (400.0, "docs/performance.md: ~0.4 KB pre-encoded inputs per track"),
    "exact_search_ms_1m": (182.0, "docs/performance.md: exact top-k over 1M items, one query"),
    "ivf_search_ms_1m": (0.56, "docs/performance.md: IVF nlist 4000, nprobe 32, 1M items"),
    "retriever_dims": (65, "docs/performance.md: BPR factors + bias column"),
    "trainer_samples_per_s_2threads": (42_500.0, "docs/benchmarks.md: DeepFM fp32, 2 threads, 40-45k samples/s"),
}

# Assumptions, stated (change them here; the tables follow).
ASSUME = {
    "requests_per_user_per_day": 20,
    "peak_to_mean": 3.0,
    "node_vcpus": 16,
    "node_memory_gib": 64,
    "usd_per_vcpu_hour": 0.048,  # general-purpose on-demand list price order of magnitude (e.g. m7i: $0.2016/4 vCPU-h)
    "usd_per_gib_hour_memory_optimized": 0.0066,  # r7i: $0.2646 per 2 vCPU + 16 GiB hour, charged per GiB
    "redis_headroom": 1.5,  # fragmentation, AOF rewrite fork, growth
    "redis_master_gib": 25,  # keep a master small: fast failover resync, fork without swapping
    "negatives_per_event": 1,
    "epochs_per_retrain": 3,
    "ddp_efficiency": 0.8,  # samples/s of N ranks / (N x one rank); gloo on a 10+ Gb/s network, DeepFM-sized models
    "retrain_hours_budget": 6,
    "catalog_embed_days_budget": 2,
    "ivf_vectors_scanned_factor": 1.0,  # cost ~ nprobe * N / nlist with nlist = 4 sqrt(N)
}


def load(path: Path) -> dict:
    if not path.exists():
        raise SystemExit(f"{path} is missing: run the benchmark that writes it first")
    return json.loads(path.read_text())


def model(cluster: dict, extract: dict) -> dict:
    t, a, q = TARGET, ASSUME, {k: v for k, (v, _) in QUOTED.items()}
    runs = cluster["runs"]
    per_track = median(r["bytes_per_track"] for r in runs)
    per_user = median(r["bytes_per_user"] for r in runs)
    rows: list[dict] = []

    def row(part: str, quantity: str, value: float, arithmetic: str, unit: str = "") -> None:
        rows.append({"part": part, "quantity": quantity, "value": value, "unit": unit, "arithmetic": arithmetic})

    # Online store (Redis Cluster).
    data_gib = (per_track * t["tracks"] + per_user * t["users"]) / 2**30
    masters = math.ceil(data_gib * a["redis_headroom"] / a["redis_master_gib"])
    row(
        "online store",
        "data in Redis",
        data_gib,
        f"{per_track:,.0f} B/track x 100M + {per_user:,.0f} B/user x 10M",
        "GiB",
    )
    row("online store", "masters (+1 replica each)", masters,
        f"{data_gib:,.0f} GiB x {a['redis_headroom']} headroom / {a['redis_master_gib']} GiB per master")  # fmt: skip
    redis_cost = (
        2 * masters * a["redis_master_gib"] * a["redis_headroom"] * a["usd_per_gib_hour_memory_optimized"] * 730
    )
    row("online store", "cost per month", redis_cost,
        f"2 x {masters} nodes x {a['redis_master_gib'] * a['redis_headroom']:.0f} GiB x "
        f"${a['usd_per_gib_hour_memory_optimized']}/GiB-h x 730 h", "USD")  # fmt: skip

    # Ranker: track table and request rate.
    table_gib = t["tracks"] * q["encoded_inputs_bytes_per_track"] / 2**30
    load_h = q["track_table_load_s_per_1m"] * t["tracks"] / 1e6 / 3600
    row("ranker", "pre-encoded inputs of 100M tracks per pod", table_gib, "100M x 400 B", "GiB")
    row("ranker", "track-table load through Feast, one pod", load_h, "400 s per 1M x 100", "h")
    peak_rps = t["users"] * a["requests_per_user_per_day"] / 86400 * a["peak_to_mean"]
    per_vcpu = q["ranker_req_per_s_2vcpu"] / 2
    ranker_vcpus = math.ceil(peak_rps / per_vcpu)
    row("ranker", "peak requests/s", peak_rps, f"10M users x {a['requests_per_user_per_day']}/day / 86400 x "
        f"{a['peak_to_mean']} peak", "req/s")  # fmt: skip
    row("ranker", "vCPUs at peak (HPA max)", ranker_vcpus, f"{peak_rps:,.0f} / {per_vcpu:,.0f} req/s per vCPU")
    row("ranker", "cost per month (peak-sized)", ranker_vcpus * a["usd_per_vcpu_hour"] * 730,
        f"{ranker_vcpus} vCPU x ${a['usd_per_vcpu_hour']}/vCPU-h x 730 h", "USD")  # fmt: skip

    # Retriever.
    exact_s = q["exact_search_ms_1m"] * t["tracks"] / 1e6 / 1000
    ivf_ms = q["ivf_search_ms_1m"] * math.sqrt(t["tracks"] / 1e6) * a["ivf_vectors_scanned_factor"]
    vectors_gib = t["tracks"] * q["retriever_dims"] * 4 / 2**30
    row("retriever", "exact top-k over 100M, one query", exact_s, "182 ms per 1M x 100", "s")
    row("retriever", "IVF top-k over 100M, one query", ivf_ms,
        "0.56 ms x sqrt(100) (nprobe x N/nlist grows as sqrt N with nlist = 4 sqrt N)", "ms")  # fmt: skip
    row("retriever", "item vectors per replica", vectors_gib, f"100M x {q['retriever_dims']} x 4 B", "GiB")
    shards = math.ceil(vectors_gib * 2 / (a["node_memory_gib"] / 2))
    row("retriever", "shards (vectors + IVF copy in half a node)", shards,
        f"{vectors_gib:,.0f} GiB x 2 / {a['node_memory_gib'] / 2:.0f} GiB")  # fmt: skip

    # Trainer.
    rows_per_retrain = t["events_per_month"] * (1 + a["negatives_per_event"]) * a["epochs_per_retrain"]
    per_node = q["trainer_samples_per_s_2threads"] / 2 * a["node_vcpus"]
    one_node_h = rows_per_retrain / per_node / 3600
    nodes = math.ceil(one_node_h / (a["retrain_hours_budget"] * a["ddp_efficiency"]))
    row("trainer", "samples per monthly retrain", rows_per_retrain,
        f"1B events x (1 + {a['negatives_per_event']} negative) x {a['epochs_per_retrain']} epochs")  # fmt: skip
    row(
        "trainer",
        "one node (torchrun, 16 vCPU)",
        one_node_h,
        f"{rows_per_retrain:,.0f} / ({q['trainer_samples_per_s_2threads']:,.0f}/2 x {a['node_vcpus']}) samples/s",
        "h",
    )
    row("trainer", f"DDP nodes for {a['retrain_hours_budget']} h", nodes,
        f"{one_node_h:,.1f} h / ({a['retrain_hours_budget']} h x {a['ddp_efficiency']} efficiency)")  # fmt: skip

    # Catalog embedding.
    local = next(r for r in extract["rows"] if r["engine"].startswith("local, 1 thread"))
    per_vcpu_files = local["files_per_s"]  # one process, one thread: files/s per vCPU
    vcpu_days = t["tracks"] / per_vcpu_files / 86400
    embed_nodes = math.ceil(vcpu_days / a["catalog_embed_days_budget"] / a["node_vcpus"])
    row("catalog embedding", "files/s per vCPU (MusiCNN ONNX)", per_vcpu_files, "benchmarks/extract_engines.py")
    row("catalog embedding", "vCPU-days for 100M tracks", vcpu_days, f"100M / {per_vcpu_files:.2f} / 86400")
    row("catalog embedding", f"Ray nodes for {a['catalog_embed_days_budget']} days", embed_nodes,
        f"{vcpu_days:,.0f} vCPU-days / {a['catalog_embed_days_budget']} days / {a['node_vcpus']} vCPU")  # fmt: skip
    row("catalog embedding", "cost once", vcpu_days * 24 * a["usd_per_vcpu_hour"],
        f"{vcpu_days:,.0f} vCPU-days x 24 h x ${a['usd_per_vcpu_hour']}", "USD")  # fmt: skip
    return {"target": TARGET, "assume": ASSUME, "quoted": QUOTED, "rows": rows}


def table(result: dict) -> str:
    lines = ["| part | quantity | value | arithmetic |", "|---|---|---|---|"]
    for r in result["rows"]:
        whole = isinstance(r["value"], int) or r["value"] >= 100
        value = f"{r['value']:,.0f}" if whole else f"{r['value']:,.2f}"
        shown = f"{value} {r['unit']}".strip()
        lines.append(f"| {r['part']} | {r['quantity']} | {shown} | {r['arithmetic']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "scaling")
    args = p.parse_args(argv)
    cluster = load(ROOT / "docs" / "results" / "redis_cluster" / "results.json")
    extract = load(ROOT / "docs" / "results" / "extract_engines" / "results.json")
    result = model(cluster, extract)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "scaling.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
