"""Ranker start-up and memory at catalog scale, two code versions side by side in one run.

    nice -n 10 .venv/bin/python -m benchmarks.startup_memory --catalogs 10000,100000 --before ecc88e0 --repeats 2
    .venv/bin/python -m benchmarks.performance_report      # table + chart in docs/performance.md

For each catalog (a SQLite world from benchmarks/serving_world.py, built once and cached under data/perf/worlds)
and each code version (`before`: a git ref exported to data/perf/code/<ref>; `after`: this tree), the ranker
runs as deployed: `uvicorn services.ranker.main:create_app --factory --workers 2`. Measured:
- ready_s: from the process start until every worker has finished its start-up (imports, track table, item
  inputs encoded, bundle); uvicorn answers no request before its worker's start-up is complete, so no request
  sees a half-built table;
- per worker, after warm-up requests: PSS and USS (psutil, from /proc/<pid>/smaps), and RSS.
Runs alternate between the versions (before, after, after, before, ...) so that machine noise hits both alike;
the load average is recorded around every run. Writes docs/results/performance/startup_memory.{json,csv}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

import httpx
import numpy as np
import psutil

from benchmarks.process_cpu import tree_cpu_s
from benchmarks.serving_world import build_world, size_label
from encore.io import atomic_path
from encore.store import StoreSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "performance"
WORLDS = Path(os.environ.get("ENCORE_PERF_WORLDS", ROOT / "data" / "perf" / "worlds"))  # or --worlds
CODE = ROOT / "data" / "perf" / "code"
WARMUP_REQUESTS = 100
TIMED_REQUESTS = 200  # one client, after the warm-up: /recommend latency against catalog size (popularity candidates)
READY_LINE = "Application startup complete."


def rev_parse(ref: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def export_ref(ref: str) -> Path:
    """The tree of `ref` as plain files (git archive), reused when already exported."""
    sha = rev_parse(ref)
    folder = CODE / sha[:12]
    if not (folder / "services").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def workers_of(parent: psutil.Process) -> list[psutil.Process]:
    return [p for p in parent.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def run_once(code: Path, env: dict[str, str], n_workers: int, timeout_s: float, healthcheck_s: int = 5) -> dict:
    """Start the ranker from `code`, wait for every worker, warm it up, measure its workers, stop it."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "services.ranker.main:create_app", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(n_workers), "--log-level", "info", "--no-access-log",
        "--timeout-worker-healthcheck", str(healthcheck_s),
    ]  # fmt: skip
    log_file = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115 - removed below
    load_before = load_average()
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=code, env={**env, "PYTHONPATH": str(code)}, stdout=log_file, stderr=subprocess.STDOUT
    )
    result: dict = {"load_before": load_before}
    try:
        first = None
        while True:
            text = Path(log_file.name).read_text()
            ready = text.count(READY_LINE)
            if ready and first is None:
                first = time.perf_counter() - started
            if ready >= n_workers:
                result["ready_s"] = round(time.perf_counter() - started, 2)
                result["first_ready_s"] = round(first or 0.0, 2)
                result["startup_cpu_s"] = round(tree_cpu_s(process.pid), 2)
                break
            if process.poll() is not None:
                raise RuntimeError(f"ranker exited with {process.returncode}:\n{text[-3000:]}")
            if time.perf_counter() - started > timeout_s:
                result["status"] = f"not ready after {timeout_s:.0f} s"
                return result
            time.sleep(0.1)
        statuses, latencies = [], []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(WARMUP_REQUESTS + TIMED_REQUESTS):
                sent = time.perf_counter()
                statuses.append(client.get("/recommend", params={"user_id": f"u{i % 5000}"}).status_code)
                if i >= WARMUP_REQUESTS:
                    latencies.append((time.perf_counter() - sent) * 1000)
            ready_body = client.get("/readyz").json()
        if set(statuses) != {200}:
            raise RuntimeError(f"warm-up answers {sorted(set(statuses))}")
        result["latency_ms"] = {
            "p50": round(float(np.percentile(latencies, 50)), 2),
            "p99": round(float(np.percentile(latencies, 99)), 2),
        }
        workers = []
        for worker in workers_of(psutil.Process(process.pid)):
            info = worker.memory_full_info()
            workers.append(
                {
                    "rss_mib": round(info.rss / 2**20, 1),
                    "pss_mib": round(info.pss / 2**20, 1),
                    "uss_mib": round(info.uss / 2**20, 1),
                }
            )
        result.update(
            status="ok",
            workers=workers,
            tracks_in_table=ready_body.get("detail", ready_body).get("tracks_in_table"),
            load_after=load_average(),
        )
        return result
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
        os.unlink(log_file.name)


@contextmanager
def variant_env(world: Path, variant: str, env: dict[str, str]) -> Iterator[tuple[dict[str, str], str]]:
    """(environment, state suffix of the version's name) of one run of `variant`.

    Restarts (`before`, `after`) keep their encoded item inputs in a folder per world and version, as a
    restarted host keeps its temp dir; a run that finds it empty is a first start and named so. `after-first`
    and `after-nosnap` get empty folders (for the item inputs; for the track snapshot too), removed after.
    """
    if variant in ("before", "after"):
        items = world / f"item-cache-{variant}"
        state = "" if items.is_dir() and any(p.is_dir() for p in items.iterdir()) else ", first start"
        yield {**env, "ENCORE_RANKER_ITEM_CACHE_DIR": str(items)}, state
        return
    with tempfile.TemporaryDirectory(dir=world, prefix=".run-") as scratch:
        run_env = {**env, "ENCORE_RANKER_ITEM_CACHE_DIR": str(Path(scratch) / "items")}
        if variant == "after-nosnap":
            run_env["ENCORE_RANKER_TRACK_SNAPSHOT_DIR"] = str(Path(scratch) / "tracks")
            yield run_env, ", no snapshot"
        else:
            yield run_env, ", first start"


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    versions = list(dict.fromkeys(r["version"] for r in runs))  # in order of first appearance
    for catalog in sorted({r["catalog"] for r in runs}):
        for version in versions:
            ok = [r for r in runs if r["catalog"] == catalog and r["version"] == version and r["status"] == "ok"]
            if not ok:
                continue
            rows.append(
                {
                    "catalog": catalog,
                    "version": version,
                    "runs": len(ok),
                    "ready_s_median": round(median(r["ready_s"] for r in ok), 2),
                    "pss_mib_per_worker_median": round(median(w["pss_mib"] for r in ok for w in r["workers"]), 1),
                    "uss_mib_per_worker_median": round(median(w["uss_mib"] for r in ok for w in r["workers"]), 1),
                    "rss_mib_per_worker_median": round(median(w["rss_mib"] for r in ok for w in r["workers"]), 1),
                    "load_median": round(median(r["load_before"][0] for r in ok), 2),
                    "startup_cpu_s_median": _cpu_median(ok),
                    "p50_ms_median": _median_of(ok, "p50"),
                    "p99_ms_median": _median_of(ok, "p99"),
                }
            )
    return rows


def _cpu_median(runs: list[dict]) -> float | None:
    values = [r["startup_cpu_s"] for r in runs if "startup_cpu_s" in r]
    return round(median(values), 2) if values else None


def _median_of(runs: list[dict], key: str) -> float | None:
    values = [r["latency_ms"][key] for r in runs if "latency_ms" in r]
    return round(median(values), 2) if values else None


def save(args: argparse.Namespace, argv: list[str] | None, previous: Path, runs: list[dict]) -> list[dict]:
    args.out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    earlier = json.loads(previous.read_text())["commands"] if args.append and previous.exists() else []
    command = "python -m benchmarks.startup_memory " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = {
        "commands": earlier if earlier and earlier[-1] == command else [*earlier, command],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "note": "shared 2-core machine under load from other jobs: re-measure on a quiet machine",
        "workers": args.workers,
        "runs": runs,
        "summary": summary,
    }
    with atomic_path(args.out / "startup_memory.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    if summary:
        with atomic_path(args.out / "startup_memory.csv") as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
            writer.writeheader()
            writer.writerows(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalogs", default="10000,100000")
    parser.add_argument("--before", default="ecc88e0", help="git ref of the 'before' code")
    parser.add_argument(
        "--after", default="HEAD", help="git ref of the 'after' code (exported: edits meanwhile are safe)"
    )
    parser.add_argument("--after-name", default="after", help="the after version's name in the results")
    parser.add_argument("--append", action="store_true", help="add these runs to the existing results")
    parser.add_argument("--before-max-catalog", type=int, default=100_000, help="larger catalogs: after only")
    parser.add_argument(
        "--variants",
        default="before,after",
        help="runs per catalog and repeat: before, after (restarts: the item inputs of an earlier run are "
        "on disk), after-first (the first start of a bundle: no encoded inputs yet; the snapshot the world's "
        "bootstrap wrote), after-nosnap (no snapshot either: the first worker reads the store and writes one)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--healthcheck-s",
        type=int,
        default=5,
        help="uvicorn's --timeout-worker-healthcheck (its default 5): a worker that does not answer the parent's "
        "ping in time is killed and restarted",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worlds", type=Path, default=WORLDS, help="where the worlds are built and cached")
    args = parser.parse_args(argv)

    versions = {"before": export_ref(args.before), "after": export_ref(args.after)}
    refs = {name: rev_parse(ref)[:12] for name, ref in (("before", args.before), ("after", args.after))}
    previous = args.out / "startup_memory.json"
    runs: list[dict] = json.loads(previous.read_text())["runs"] if args.append and previous.exists() else []
    summary: list[dict] = []
    for catalog in (int(c) for c in args.catalogs.split(",")):
        label = size_label(catalog)
        settings = StoreSettings(args.worlds / label / "feast", f"bench_{label}", "sqlite")
        world = build_world(args.worlds, catalog, settings)
        env = {
            **os.environ,
            **world.env(),
            "ENCORE_API_KEY": "bench-key",
            "ENCORE_RETRIEVER_URL": "http://127.0.0.1:9",  # nothing listens: popularity candidates (no retriever cost)
            "ENCORE_LOG_LEVEL": "warning",
        }
        names = [v for v in args.variants.split(",") if v != "before" or catalog <= args.before_max_catalog]
        for repeat in range(args.repeats):
            for variant in names if repeat % 2 == 0 else names[::-1]:
                version = variant.split("-")[0]
                print(f"[{label}] {variant} run {repeat + 1}/{args.repeats} (load {load_average()})", flush=True)
                with variant_env(world.folder, variant, env) as (run_env, state):
                    result = run_once(versions[version], run_env, args.workers, args.timeout_s, args.healthcheck_s)
                name = (args.after_name if version == "after" else version) + state
                runs.append({"catalog": catalog, "version": name, "ref": refs[version], "repeat": repeat, **result})
                print(f"[{label}] {name}: {json.dumps(result)}", flush=True)
                summary = save(args, argv, previous, runs)  # after every run: a long run can be cut short
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
