"""Serving benchmark: Encore's /recommend hot path against the per-request Feast design, scaling, HTTP load, memory.

    .venv/bin/python -m benchmarks.serving_latency --catalogs 10000,100000,1000000 --candidates 50,200,1000

Parts (all on one machine, one run, Redis as the online store; worlds from benchmarks/serving_world.py):
- `hotpath`: in process, the same requests (user + candidate ids) answered two ways, interleaved request by
  request so machine noise hits both alike: Encore (user cache + in-process TrackTable + spec encoder + ONNX)
  and the straightforward design (one `FeatureStore.get_online_features` call for the user and every candidate
  on every request, then the same encoder and model). The top-k lists must be equal; the run stops otherwise.
  Swept over candidate counts (first catalog) and catalog sizes (200 candidates).
- `http`: the real services as uvicorn processes (retriever 1 worker, ranker 2 workers), an asyncio + aiohttp
  load generator: one client (p50/p90/p99), then N concurrent clients for a while (requests/s, errors).
- `memory`: the ranker's resident memory (all workers) after a short warm-up and after `--memory-seconds` of
  load at N clients.
Writes `<out>/serving.json`, `<out>/serving.md` and the chart `docs/serving_scaling.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving_world import ServingWorld, build_world, size_label
from encore import feature_names as fn
from encore.artifacts import load_bundle
from encore.io import atomic_path
from encore.settings import PROJECT_ROOT, EncoreSettings
from encore.store import Store, StoreSettings
from encore.track_table import TrackTable
from services.ranker.bundle import RankerModel, load_ranker_model
from services.ranker.encoded_items import ItemInputCache
from services.ranker.pipeline import Candidates, ItemFeatures, Order, Score, UserFeatures

K = 20


# --- the two designs, in process ----------------------------------------------------------------------


class EncoreHotPath:
    """The ranker's own steps after retrieval: user features (cache) >> item features (TrackTable) >> score >> order."""

    def __init__(self, store: Store, model: RankerModel):
        self.model = model
        self.user_features = UserFeatures(store)
        self.item_features = ItemFeatures(store)
        self.score = Score(ItemInputCache(lambda: self.item_features.table))
        self.order = Order()

    def load(self, track_ids: list[str]) -> float:
        """Start-up work, as the service does it: track table (the whole catalog), then item inputs encoded once."""
        started = time.perf_counter()
        self.user_features.load()
        self.item_features.table = TrackTable(self.item_features.store)
        self.item_features.table.load(track_ids)
        assert self.score.cache is not None
        self.score.cache.build(self.model.spec)
        return time.perf_counter() - started

    async def __call__(self, user_id: str, track_ids: list[str]) -> list[tuple[str, float]]:
        user = await self.user_features(user_id)
        items, _ = await self.item_features(track_ids)
        scores = self.score(self.model, user_id, user, items)
        candidates = Candidates(track_ids, {}, "bench")
        return [(item.track_id, item.score) for item in self.order(candidates, items, scores, K)]


class FeastPerRequest:
    """The straightforward design: every request reads the user and all candidates with get_online_features."""

    def __init__(self, store: Store, model: RankerModel):
        self.store, self.model = store, model
        views = (fn.USER_PROFILE, *fn.TRACK_VIEWS)
        self.refs = [f"{view}:{name}" for view in views for name in fn.VIEW_FIELDS[view]]
        self.n_tokens = sum(1 for f in model.spec.fields if f.column.startswith("audio_tok_"))

    def __call__(self, user_id: str, track_ids: list[str]) -> list[tuple[str, float]]:
        rows = [{fn.USER_ID: user_id, fn.TRACK_ID: t} for t in track_ids]
        values = self.store.feast.get_online_features(features=self.refs, entity_rows=rows).to_dict()
        frame: dict[str, Any] = {name: values[name] for name in values}
        dim = next(f.dim for f in self.model.spec.fields if f.kind == "dense")
        embeddings = [
            np.zeros(dim, np.float32) if e is None else np.asarray(e, np.float32) for e in values["embedding"]
        ]
        frame["audio_emb"] = embeddings
        for i in range(self.n_tokens):
            frame[f"audio_tok_{i}"] = [None if t is None else t[i] for t in values["tokens"]]
        frame["audio_missing"] = [int(e is None) for e in values["embedding"]]
        import pandas as pd

        scores = self.model.scorer.score(self.model.spec.encode_packed(pd.DataFrame(frame)))
        top = np.argsort(-scores, kind="stable")[:K]
        return [(track_ids[i], float(scores[i])) for i in top.tolist()]


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "n": len(ms),
    }


def requests_for(world: ServingWorld, n_candidates: int, n_requests: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    return [
        (f"u{rng.randrange(world.n_users)}", [f"t{i}" for i in rng.sample(range(world.n_tracks), n_candidates)])
        for _ in range(n_requests)
    ]


def run_hotpath(world: ServingWorld, candidate_counts: Sequence[int], n_requests: int, naive: bool) -> list[dict]:
    store = Store(world.store_settings)
    model = load_ranker_model(load_bundle(world.bundle_path))
    encore = EncoreHotPath(store, model)
    load_s = encore.load(world.track_ids())
    per_request = FeastPerRequest(store, model)
    gc.collect()
    gc.freeze()  # as the service does after start-up
    print(
        f"[hotpath {size_label(world.n_tracks)}] track table loaded and item inputs encoded in {load_s:.1f} s",
        flush=True,
    )
    rows = []
    loop = asyncio.new_event_loop()
    try:
        for n_candidates in candidate_counts:
            requests = requests_for(world, n_candidates, n_requests + 20, seed=n_candidates)
            times: dict[str, list[float]] = {"encore": [], "feast_per_request": []}
            for i, (user_id, track_ids) in enumerate(requests):
                start = time.perf_counter()
                ours = loop.run_until_complete(encore(user_id, track_ids))
                encore_s = time.perf_counter() - start
                if naive:
                    start = time.perf_counter()
                    theirs = per_request(user_id, track_ids)
                    naive_s = time.perf_counter() - start
                    if [t for t, _ in ours] != [t for t, _ in theirs]:
                        raise SystemExit(f"error: different answers for {user_id}: {ours[:3]} vs {theirs[:3]}")
                    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-5, atol=1e-7)
                if i >= 20:  # the first requests warm caches and ONNX Runtime
                    times["encore"].append(encore_s)
                    if naive:
                        times["feast_per_request"].append(naive_s)
            for design, samples in times.items():
                if samples:
                    row = {"catalog": world.n_tracks, "candidates": n_candidates, "design": design}
                    rows.append(row | percentiles(samples) | {"table_load_s": round(load_s, 2)})
                    print(f"[hotpath] {json.dumps(rows[-1])}", flush=True)
    finally:
        loop.close()
        gc.unfreeze()
    return rows


# --- the services over HTTP ------------------------------------------------------------------------------


@contextmanager
def services(world: ServingWorld, ranker_workers: int, n_candidates: int, log_dir: Path):
    """Retriever (1 worker) and ranker (`ranker_workers`) as uvicorn processes on free ports."""
    from tests.conftest import free_port

    ports = {"retriever": free_port(), "ranker": free_port()}
    env = {
        **os.environ,
        **world.env(),
        "ENCORE_RANKER_RETRIEVER_URL": f"http://127.0.0.1:{ports['retriever']}",
        "ENCORE_RANKER_CANDIDATES": str(n_candidates),
        "ENCORE_RETRIEVER_REFRESH_S": "0",
        "ENCORE_LOG_LEVEL": "warning",
        "OMP_NUM_THREADS": "1",
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    try:
        for name, workers in (("retriever", 1), ("ranker", ranker_workers)):
            cmd = [
                sys.executable, "-m", "uvicorn", f"services.{name}.main:create_app", "--factory", "--host",
                "127.0.0.1", "--port", str(ports[name]), "--workers", str(workers), "--log-level", "warning",
                "--no-access-log",
            ]  # fmt: skip
            log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
            procs[name] = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            _wait_ready(f"http://127.0.0.1:{ports[name]}", procs[name], workers)
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, procs
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(url: str, proc: subprocess.Popen, workers: int, timeout_s: float = 600) -> None:
    import httpx

    deadline, ready = time.monotonic() + timeout_s, 0
    while ready < 4 * workers:  # several answers in a row, so every worker has started
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"error: {url} did not become ready (exit code {proc.poll()})")
        try:
            ready = ready + 1 if httpx.get(f"{url}/readyz", timeout=2).status_code == 200 else 0
        except httpx.TransportError:
            ready = 0
        time.sleep(0.2 if ready else 1.0)


async def load(url: str, users: Sequence[str], clients: int, *, seconds: float = 0, requests: int = 0) -> dict:
    """`clients` concurrent loops of GET /recommend for `seconds` (or `requests` in all); latency per request."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    degraded = 0
    rng = random.Random(7)
    deadline = time.perf_counter() + seconds if seconds else None
    budget = [requests]

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal degraded
        while (deadline is None and budget[0] > 0) or (deadline is not None and time.perf_counter() < deadline):
            budget[0] -= 1
            start = time.perf_counter()
            try:
                async with session.get(f"{url}/recommend", params={"user_id": rng.choice(users), "k": K}) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                        continue
                    degraded += b'"degraded":true' in body
            except (aiohttp.ClientError, TimeoutError) as error:
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests_ok": len(latencies),
        "errors": errors,
        "degraded": degraded,
        "rps": round(len(latencies) / elapsed, 1),
        **percentiles(latencies or [0.0]),
    }


def ranker_rss_mb(proc: subprocess.Popen) -> float:
    import psutil

    parent = psutil.Process(proc.pid)  # uvicorn's supervisor; its workers are spawn_main children
    workers = [p for p in parent.children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]
    return round(sum(p.memory_info().rss for p in workers or [parent]) / 2**20, 1)


def run_http(world: ServingWorld, args: argparse.Namespace, log_dir: Path) -> dict:
    users = world.user_ids()
    result: dict[str, Any] = {"catalog": world.n_tracks, "candidates": 200, "ranker_workers": args.workers}
    with services(world, args.workers, 200, log_dir) as (urls, procs):
        url = urls["ranker"]
        asyncio.run(load(url, users, 4, requests=200))  # warm-up: ONNX Runtime, pools, user cache
        result["one_client"] = asyncio.run(load(url, users, 1, requests=args.requests))
        print(f"[http] one client: {json.dumps(result['one_client'])}", flush=True)
        result["concurrent"] = asyncio.run(load(url, users, args.clients, seconds=args.http_seconds))
        print(f"[http] {args.clients} clients: {json.dumps(result['concurrent'])}", flush=True)
        if args.memory_seconds:
            asyncio.run(load(url, users, args.clients, seconds=5))
            before = ranker_rss_mb(procs["ranker"])
            run = asyncio.run(load(url, users, args.clients, seconds=args.memory_seconds))
            after = ranker_rss_mb(procs["ranker"])
            result["memory"] = {
                "seconds": args.memory_seconds,
                "rss_before_mb": before,
                "rss_after_mb": after,
                "change_pct": round(100 * (after - before) / before, 2),
                "requests_ok": run["requests_ok"],
                "errors": run["errors"],
            }
            print(f"[memory] {json.dumps(result['memory'])}", flush=True)
    return result


# --- report ------------------------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    lines = [f"Machine: {results['machine']}; load average before the run: {results['loadavg_before']}.", ""]
    lines += [
        "| catalog | candidates | design | p50 ms | p90 ms | p99 ms | speed-up (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = results["hotpath"]
    for row in rows:
        naive = next(
            (r for r in rows if r["design"] == "feast_per_request" and r["catalog"] == row["catalog"]
             and r["candidates"] == row["candidates"]),
            None,
        )  # fmt: skip
        speedup = f"{naive['p50_ms'] / row['p50_ms']:.1f}x" if naive and row["design"] == "encore" else ""
        lines.append(
            f"| {size_label(row['catalog'])} | {row['candidates']} | {row['design']} | {row['p50_ms']:.2f} | "
            f"{row['p90_ms']:.2f} | {row['p99_ms']:.2f} | {speedup} |"
        )
    http = results.get("http")
    if http:
        lines += [
            "",
            "| HTTP /recommend (200 candidates) | clients | requests | rps | p50 ms | p90 ms | p99 ms | errors |",
        ]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for key in ("one_client", "concurrent"):
            r = http[key]
            lines.append(
                f"| {key.replace('_', ' ')}, ranker {http['ranker_workers']} workers | {r['clients']} | "
                f"{r['requests_ok']} | {r['rps']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{sum(r['errors'].values())} |"
            )
        if "memory" in http:
            m = http["memory"]
            lines += ["", f"Ranker RSS (all workers): {m['rss_before_mb']} MiB after warm-up, {m['rss_after_mb']} MiB "
                      f"after {m['seconds']} s of load ({m['change_pct']:+.2f}%, {m['requests_ok']} requests, "
                      f"errors {m['errors'] or 'none'})."]  # fmt: skip
    lines.append(f"\nLoad average after the run: {results['loadavg_after']}.")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    first = min(r["catalog"] for r in rows)
    panels = (
        (
            axes[0],
            [r for r in rows if r["catalog"] == first],
            "candidates",
            f"candidates (catalog {size_label(first)})",
        ),
        (axes[1], [r for r in rows if r["candidates"] == 200], "catalog", "catalog size (200 candidates)"),
    )
    for ax, panel, x_key, x_label in panels:
        for design, color in (("encore", "tab:blue"), ("feast_per_request", "tab:red")):
            pts = sorted((r[x_key], r["p50_ms"], r["p99_ms"]) for r in panel if r["design"] == design)
            if not pts:
                continue
            xs, p50, p99 = zip(*pts, strict=True)
            ax.plot(xs, p50, "o-", color=color, label=f"{design} p50")
            ax.plot(xs, p99, "s--", color=color, alpha=0.6, label=f"{design} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel("latency per request (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("/recommend hot path: Encore vs get_online_features per request")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalogs", default="10000,100000,1000000", help="catalog sizes; the first is used for HTTP")
    parser.add_argument("--candidates", default="50,200,1000", help="candidate counts (on the first catalog)")
    parser.add_argument("--requests", type=int, default=300, help="requests per hot-path cell and one-client run")
    parser.add_argument(
        "--parts", default="hotpath,http,memory", help="any of world (build only), hotpath, http, memory"
    )
    parser.add_argument("--workers", type=int, default=2, help="ranker workers for the HTTP part")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for the HTTP part")
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--memory-seconds", type=float, default=60.0)
    settings = EncoreSettings()
    parser.add_argument("--redis-url", default=settings.redis_url)
    default_root = settings.cache_dir / "bench-serving"
    parser.add_argument("--world-root", type=Path, default=default_root)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "serving")
    parser.add_argument("--chart", type=Path, default=PROJECT_ROOT / "docs" / "serving_scaling.png")
    args = parser.parse_args(argv)
    catalogs = [int(x) for x in args.catalogs.split(",")]
    candidate_counts = [int(x) for x in args.candidates.split(",")]
    parts = set(args.parts.split(","))
    known = {"world", "hotpath", "http", "memory"}
    if not parts <= known:
        parser.error(f"unknown parts {sorted(parts - known)}")
    if "memory" not in parts:
        args.memory_seconds = 0

    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([".venv/bin/python -m benchmarks.serving_latency", *(argv or sys.argv[1:])]),
        "hotpath": [],
    }
    worlds = {}
    for n in catalogs:
        settings = StoreSettings(
            args.world_root / size_label(n) / "feast", f"bench_{size_label(n)}", "redis", args.redis_url
        )
        worlds[n] = build_world(args.world_root, n, settings)
    if "hotpath" in parts:
        for i, n in enumerate(catalogs):
            counts = candidate_counts if i == 0 else [200]
            results["hotpath"] += run_hotpath(worlds[n], counts, args.requests, naive=True)
    if parts & {"http", "memory"}:
        results["http"] = run_http(worlds[catalogs[0]], args, args.out / "logs")
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(results, indent=2))
    (args.out / "serving.md").write_text(markdown(results))
    if results["hotpath"]:
        chart(results["hotpath"], args.chart)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
