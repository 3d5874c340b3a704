"""Retriever top-k speed and IVF quality, in process, through the service's own RecallIndex.

Run:  .venv/bin/python benchmarks/retrieval.py --out results/retrieval.json
      (--exact-items 100000 --ivf-items 1000000 --k 200 --dim 64 --nprobe 8,16,32,64,128 --queries 1000)

1. Exact: RecallIndex.candidates(user, k) over a catalog of --exact-items trained items (numpy matrix-vector
   product, seen-item mask, argpartition, Candidate objects): p50 / p90 / p99 per call, one BLAS thread as the
   service runs it. The goal: top-200 over 100k items in at most 3 ms p50.
2. IVF: the faiss IVF-flat index the service builds (`build_ivf`, nlist 4 * sqrt(n), nprobe calibrated at load
   to a sampled recall@200 >= 0.95) over --ivf-items items: build time, then for the calibrated nprobe and
   each --nprobe its p50 latency and recall@k against exact search of the same index (same users, same seen
   sets). The goal: recall@200 >= 0.95 at a million items.

Vectors are synthetic but shaped like trained ones: items and users drawn around 1,000 "taste" centres plus
noise (embedding catalogs are clustered; isotropic noise, --spread large, is IVF's worst case), a bias column
like BPR's, and 30 seen items per user.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.retriever.search import RecallIndex, SearchOptions  # noqa: E402


def make_catalog(n_items: int, n_users: int, dim: int, spread: float, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (1000, dim - 1)).astype(np.float32)
    items = centres[rng.integers(0, len(centres), n_items)] + spread * rng.normal(0, 1, (n_items, dim - 1))
    users = centres[rng.integers(0, len(centres), n_users)] + spread * rng.normal(0, 1, (n_users, dim - 1))
    items = np.hstack([items, rng.normal(0, 0.5, (n_items, 1))]).astype(np.float32)  # bias column
    users = np.hstack([users, np.ones((n_users, 1))]).astype(np.float32)
    seen = np.sort(rng.integers(0, n_items, (n_users, 30)), axis=1).astype(np.int32)
    return {"items": items, "users": users, "seen": seen}


def build_index(catalog: dict[str, np.ndarray], options: SearchOptions) -> RecallIndex:
    n_users, n_items = len(catalog["users"]), len(catalog["items"])
    seen = catalog["seen"]
    indptr = np.arange(0, seen.size + 1, seen.shape[1], dtype=np.int64)
    return RecallIndex(
        "bench", [f"u{i}" for i in range(n_users)], catalog["users"], [f"t{i}" for i in range(n_items)],
        catalog["items"], indptr, seen.ravel(), np.zeros(n_items, np.int64), None, "BPR", options,
    )  # fmt: skip


def timed_calls(index: RecallIndex, users: list[str], k: int) -> tuple[dict[str, float], list[list[str]]]:
    found, times = [], []
    for user in users[:20]:  # warm-up
        index.candidates(user, k)
    for user in users:
        start = time.perf_counter()
        result = index.candidates(user, k)
        times.append((time.perf_counter() - start) * 1000)
        found.append([c.track_id for c in result.candidates])
    t = np.array(times)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "calls": len(t)}, found  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exact-items", type=int, default=100_000, help="0 skips the exact part")
    p.add_argument("--ivf-items", type=int, default=1_000_000, help="0 skips the IVF part")
    p.add_argument("--dim", type=int, default=65, help="vector length (BPR's 64 factors + the bias column)")
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nprobe", default="8,16,32,64,128")
    p.add_argument("--nlist", type=int, default=0, help="IVF cells (0: the service default 4 * sqrt(n))")
    p.add_argument("--spread", type=float, default=0.5, help="noise around the taste centres (centres have std 1)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    report: dict = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(), "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    with threadpool_limits(limits=1, user_api="blas"):
        if args.exact_items:
            catalog = make_catalog(args.exact_items, args.queries, args.dim, args.spread, seed=0)
            exact = build_index(catalog, SearchOptions(index="exact"))
            users = [f"u{i}" for i in range(args.queries)]
            stats, _ = timed_calls(exact, users, args.k)
            report["exact"] = {"items": args.exact_items, "k": args.k, **stats}
            print(f"exact top-{args.k} over {args.exact_items:,} items: p50 {stats['p50_ms']:.2f} ms, "
                  f"p90 {stats['p90_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms", flush=True)  # fmt: skip

        if args.ivf_items:
            catalog = make_catalog(args.ivf_items, args.queries, args.dim, args.spread, seed=1)
            exact = build_index(catalog, SearchOptions(index="exact"))
            users = [f"u{i}" for i in range(args.queries)]
            exact_stats, truth = timed_calls(exact, users, args.k)
            start = time.perf_counter()
            ivf = build_index(catalog, SearchOptions(index="ivf", ivf_nlist=args.nlist))
            build_s = time.perf_counter() - start
            assert ivf.ivf is not None
            report["ivf"] = {"items": args.ivf_items, "nlist": int(ivf.ivf.nlist), "build_s": build_s,
                             "exact": exact_stats, "by_nprobe": []}  # fmt: skip
            report["ivf"].update(calibrated_nprobe=int(ivf.ivf.nprobe), calibrated_sampled_recall=ivf.ivf_recall)
            print(f"IVF over {args.ivf_items:,} items: nlist {ivf.ivf.nlist}, built and calibrated in {build_s:.1f} s "
                  f"(nprobe {ivf.ivf.nprobe} for sampled recall@200 {ivf.ivf_recall:.4f} >= 0.95); "
                  f"exact search p50 {exact_stats['p50_ms']:.2f} ms", flush=True)  # fmt: skip
            stats, found = timed_calls(ivf, users, args.k)
            recall = float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))
            report["ivf"]["calibrated"] = {f"recall@{args.k}": recall, **stats}
            print(f"  calibrated nprobe {ivf.ivf.nprobe}: recall@{args.k} {recall:.4f}, p50 {stats['p50_ms']:.2f} ms",
                  flush=True)  # fmt: skip
            for nprobe in [int(x) for x in args.nprobe.split(",")]:
                ivf.ivf.nprobe = nprobe
                stats, found = timed_calls(ivf, users, args.k)
                recall = float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))
                report["ivf"]["by_nprobe"].append({"nprobe": nprobe, f"recall@{args.k}": recall, **stats})
                print(f"  nprobe {nprobe:4d}: recall@{args.k} {recall:.4f}, p50 {stats['p50_ms']:.2f} ms, "
                      f"p99 {stats['p99_ms']:.2f} ms", flush=True)  # fmt: skip
    report["load_average_after"] = os.getloadavg()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
