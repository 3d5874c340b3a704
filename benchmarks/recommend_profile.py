"""/recommend latency, two code versions side by side: where one request's time goes, and HTTP latency and
throughput of the services as deployed.

    nice -n 10 .venv/bin/python -m benchmarks.recommend_profile --before f20c84e --after HEAD --repeats 2
    .venv/bin/python -m benchmarks.latency_report      # tables in docs/performance.md

Both versions run from a plain export of their git ref (data/perf/code/<sha>, as benchmarks/startup_memory.py
does) over the same 10k-track serving world (benchmarks/serving_world.py, Redis as the online store, 200
candidates, k=20), alternating run by run (before, after, after, before, ...) so machine noise hits both alike.
Per run:
- `inprocess`: a child process of that version builds the ranker app (services/ranker/main.py) and calls it
  through ASGI directly (no client socket); the retriever is a real uvicorn process. Per request: wall time and
  the CPU time of the serving thread; per step, the ranker's own stage timer (encore_ranker_stage_seconds:
  user_features = profile + recent events, retrieve = the retriever HTTP call, item_features = table gather,
  score = encode + ONNX, order = top-k + reasons), the ONNX call alone, and what is left outside
  `Ranker.recommend` (FastAPI routing, dependencies, response model, JSON, middleware). The floor: the bare
  `session.run` for 200 rows.
- `http`: retriever (1 worker) and ranker (2 workers) as uvicorn processes, the aiohttp load generator of
  benchmarks/serving_latency.py in this process: one client, then 16. The CPU the load generator and each
  service used is read around each phase, so requests/s can be put against what the machine had to give.
`--retrieval inprocess` runs the 'after' side with ENCORE_RANKER_RETRIEVAL=inprocess (the retriever's search in
each ranker worker, no retriever process); the 'before' side keeps the HTTP retriever, so `--before HEAD --after
HEAD --retrieval inprocess` compares the two modes on the same code. `--precision int8` likewise runs the 'after'
side with ENCORE_RANKER_PRECISION=int8 (the bundle's int8 ranker graph; the 'before' side's:
`--before-precision`, default fp32).
`--trained` serves the world's trained ranker (benchmarks/serving_world.py: planted tastes) on both sides, so the
int8 graph is a trained model's (layers that cost AUC stay fp32), not the untrained one's all-int8 graph.
Writes docs/results/performance/serving_latency.{json,csv}.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "performance"
STAGES = ("user_features", "retrieve", "item_features", "score", "order")


# --- in process (runs inside a child whose sys.path starts with the version's code) ------------------------


def _asgi_get(app, path: str, query: str):
    """One GET through the app's ASGI callable; returns the body (raises on a status other than 200)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    body: list[bytes] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"{path}?{query} answered {message['status']}")
        body.append(message.get("body", b""))

    async def run() -> bytes:
        await app(scope, receive, send)
        return b"".join(body)

    return run()


def _stage_sums(registry) -> dict[str, float]:
    return {
        sample.labels["stage"]: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "encore_ranker_stage_seconds_sum"
    }


def _timed(owner: object, name: str, spent: list[float]) -> None:
    """Shadow owner.name (a method) with a wrapper that adds its wall time to spent[0]."""
    inner = getattr(owner, name)

    if asyncio.iscoroutinefunction(inner):

        async def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
    else:

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

    setattr(owner, name, wrapper)


async def _profile(app, users: list[str], n_requests: int) -> dict:
    ranker = app.state.ranker
    rng = random.Random(11)
    for _ in range(300):  # warm-up: ONNX Runtime, the retriever session, item inputs
        await _asgi_get(app, "/recommend", f"user_id={rng.choice(users)}&k=20")
    model = ranker.holder.state
    onnx, inside = [0.0], [0.0]
    _timed(model.scorer, "score", onnx)
    _timed(ranker, "recommend", inside)
    before = _stage_sums(app.state.registry)
    wall, cpu = [], []
    for _ in range(n_requests):
        start, start_cpu = time.perf_counter(), time.thread_time()
        await _asgi_get(app, "/recommend", f"user_id={rng.choice(users)}&k=20")
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    after = _stage_sums(app.state.registry)
    ms = 1000 / n_requests
    result = {f"{s}_ms": round((after[s] - before.get(s, 0.0)) * ms, 3) for s in STAGES}
    result["onnx_ms"] = round(onnx[0] * ms, 3)
    result["outside_recommend_ms"] = round((sum(wall) - inside[0]) * ms, 3)
    result |= _percentiles("wall", wall) | _percentiles("cpu", cpu)
    result["onnx_floor_ms"] = _onnx_floor(ranker, model)
    result["served_precision"] = getattr(model, "precision", "fp32")  # what served: int8 falls back without a graph
    return result


def _percentiles(name: str, samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
    return {f"{name}_p50_ms": pick(0.5), f"{name}_p90_ms": pick(0.9), f"{name}_p99_ms": pick(0.99)}


def _onnx_floor(ranker, model, runs: int = 500) -> float:
    """Median of the bare session.run on 200 packed rows, the model's inputs as a request gives them."""
    from encore.ranker_frame import TrackFeatures, build_frame

    batch = ranker.item_features.table.lookup([f"t{i}" for i in range(200)])
    features = TrackFeatures(batch.track_ids, batch.columns, batch.present)
    packed = model.spec.encode_packed(build_frame(model.spec, "u1", None, features))
    session = model.scorer.session
    feeds = {name: packed[name] for name in model.scorer.input_names}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(["score"], feeds)
        times.append(time.perf_counter() - start)
    return round(1000 * median(times), 3)


def inprocess_child(args: argparse.Namespace) -> None:
    """Child entry: sys.path already starts with the version's code (see main); prints one JSON line."""
    from benchmarks.serving_latency import _wait_ready
    from benchmarks.serving_world import build_world, size_label
    from encore.store import StoreSettings

    label = size_label(args.catalog)
    world = build_world(
        args.world_root, args.catalog, StoreSettings(args.world_root / label / "feast", f"bench_{label}", "redis",
                                                     args.redis_url), trained=args.trained,
    )  # fmt: skip
    port = _free_port()
    env = _service_env(world.env(), args.code, port, args.retrieval, args.precision)
    retriever = _uvicorn(args.code, "retriever", port, 1, env, args.log_dir) if args.retrieval == "http" else None
    try:
        if retriever is not None:
            _wait_ready(f"http://127.0.0.1:{port}", retriever, 1)
        os.environ.update(env)
        from services.ranker.main import create_app

        app = create_app()

        async def run() -> dict:
            async with app.router.lifespan_context(app):
                return await _profile(app, world.user_ids(), args.requests)

        print("RESULT " + json.dumps(asyncio.run(run())), flush=True)
    finally:
        if retriever is not None:
            _stop(retriever)


# --- the services over HTTP ----------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_env(
    world_env: dict[str, str], code: Path, retriever_port: int, retrieval: str, precision: str = "fp32"
) -> dict[str, str]:
    return {
        **os.environ,
        **world_env,
        "PYTHONPATH": str(code),
        "ENCORE_RANKER_RETRIEVER_URL": f"http://127.0.0.1:{retriever_port}",
        "ENCORE_RANKER_RETRIEVAL": retrieval,  # code before the setting ignores it (and is only run with http)
        "ENCORE_RANKER_PRECISION": precision,  # likewise (and only run with fp32)
        "ENCORE_RANKER_CANDIDATES": "200",
        "ENCORE_RETRIEVER_REFRESH_S": "0",
        "ENCORE_LOG_LEVEL": "warning",
        "OMP_NUM_THREADS": "1",
    }


def _uvicorn(code: Path, name: str, port: int, workers: int, env: dict, log_dir: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "uvicorn", f"services.{name}.main:create_app", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _load_phase(url: str, users: list[str], clients: int, procs: dict, **how) -> dict:
    """One load phase; adds the CPU the load generator (this process) and each service spent, per request."""
    from benchmarks.process_cpu import tree_cpu_s
    from benchmarks.serving_latency import load

    load_before = round(os.getloadavg()[0], 2)
    cpu_before = {name: tree_cpu_s(p.pid) for name, p in procs.items()}
    own_before = time.process_time()
    result = asyncio.run(load(url, users, clients, **how))
    n = max(1, result["requests_ok"])
    result["load_generator_cpu_ms_per_request"] = round(1000 * (time.process_time() - own_before) / n, 3)
    for name, p in procs.items():
        result[f"{name}_cpu_ms_per_request"] = round(1000 * (tree_cpu_s(p.pid) - cpu_before[name]) / n, 3)
    result["loadavg_1m_before"], result["loadavg_1m_after"] = load_before, round(os.getloadavg()[0], 2)
    return result


def _services(retrieval: str, ranker_workers: int) -> list[tuple[str, int]]:
    """(service, workers) to start: no retriever process when the ranker retrieves in-process."""
    ranker = ("ranker", ranker_workers)
    return [ranker] if retrieval == "inprocess" else [("retriever", 1), ranker]


def run_http(code: Path, world, args: argparse.Namespace, retrieval: str, precision: str = "fp32") -> dict:
    from benchmarks.serving_latency import _wait_ready, load

    ports = {"retriever": _free_port(), "ranker": _free_port()}
    env = _service_env(world.env(), code, ports["retriever"], retrieval, precision)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, workers in _services(retrieval, args.workers):
            procs[name] = _uvicorn(code, name, ports[name], workers, env, args.log_dir)
            _wait_ready(f"http://127.0.0.1:{ports[name]}", procs[name], workers)
        url, users = f"http://127.0.0.1:{ports['ranker']}", world.user_ids()
        asyncio.run(load(url, users, 4, requests=300))  # warm-up: ONNX Runtime, pools
        one = _load_phase(url, users, 1, procs, requests=args.requests)
        many = _load_phase(url, users, args.clients, procs, seconds=args.http_seconds)
        return {"one_client": one, "concurrent": many}
    finally:
        for process in procs.values():
            _stop(process)


# --- the run ---------------------------------------------------------------------------------------------------


def run_inprocess(code: Path, args: argparse.Namespace, retrieval: str, precision: str = "fp32") -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--code", str(code), "--catalog", str(args.catalog),
        "--requests", str(args.requests), "--world-root", str(args.world_root), "--redis-url", args.redis_url,
        "--log-dir", str(args.log_dir), "--retrieval", retrieval, "--precision", precision,
        *(["--trained"] if args.trained else []),
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"error: in-process run of {code} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def summarize(runs: list[dict]) -> list[dict]:
    """Per version, the median over its runs of every number measured."""
    rows = []
    for version in dict.fromkeys(r["version"] for r in runs):
        mine = [r for r in runs if r["version"] == version]
        row: dict = {"version": version, "ref": mine[0]["ref"], "runs": len(mine)}
        for part in ("inprocess", "one_client", "concurrent"):
            keys = [k for k, v in mine[0][part].items() if isinstance(v, int | float)]
            for key in keys:
                row[f"{part}.{key}"] = round(median(r[part][key] for r in mine), 3)
        rows.append(row)
    return rows


def save(args: argparse.Namespace, runs: list[dict], command: str) -> list[dict]:
    from encore.io import atomic_path

    summary = summarize(runs)
    report = {
        "command": command,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "catalog": args.catalog,
        "candidates": 200,
        "ranker_workers": args.workers,
        "clients": args.clients,
        "retrieval": {"before": args.before_retrieval, "after": args.retrieval},
        "precision": {"before": args.before_precision, "after": args.precision},
        "ranker": "trained (planted tastes)" if args.trained else "untrained",
        "runs": runs,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "serving_latency.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    with atomic_path(args.out / "serving_latency.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    return summary


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="f20c84e", help="git ref of the 'before' code")
    parser.add_argument("--after", default="HEAD", help="git ref of the 'after' code (exported: edits are safe)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--catalog", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1000, help="in-process requests, and one-client requests")
    parser.add_argument("--workers", type=int, default=2, help="ranker workers for the HTTP part")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--parts", default="inprocess,http")
    parser.add_argument(
        "--retrieval",
        choices=("http", "inprocess"),
        default="http",
        help="ENCORE_RANKER_RETRIEVAL of the 'after' side (the 'before' side's: --before-retrieval)",
    )
    parser.add_argument(
        "--before-retrieval",
        choices=("http", "inprocess"),
        default="http",
        help="ENCORE_RANKER_RETRIEVAL of the 'before' side (both inprocess: isolates --precision)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="ENCORE_RANKER_PRECISION of the 'after' side (the 'before' side's: --before-precision)",
    )
    parser.add_argument(
        "--before-precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="ENCORE_RANKER_PRECISION of the 'before' side (both int8: compares code on the int8 graph)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("ENCORE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--trained", action="store_true", help="serve the world's trained ranker (both sides)")
    parser.add_argument("--world-root", type=Path, default=ROOT / "data" / "bench-serving")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "data" / "perf" / "logs")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from benchmarks.serving_world import build_world, size_label
    from benchmarks.startup_memory import export_ref, rev_parse
    from encore.store import StoreSettings

    label = size_label(args.catalog)
    settings = StoreSettings(args.world_root / label / "feast", f"bench_{label}", "redis", args.redis_url)
    world = build_world(args.world_root, args.catalog, settings, trained=args.trained)
    versions = {name: (export_ref(ref), rev_parse(ref)[:12]) for name, ref in (("before", args.before),
                                                                                ("after", args.after))}  # fmt: skip
    parts = set(args.parts.split(","))
    command = "python -m benchmarks.recommend_profile " + shlex.join(sys.argv[1:] if argv is None else argv)
    runs: list[dict] = []
    for repeat in range(args.repeats):
        for name in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
            code, ref = versions[name]
            retrieval = args.retrieval if name == "after" else args.before_retrieval
            precision = args.precision if name == "after" else args.before_precision
            run: dict = {"version": name, "ref": ref, "repeat": repeat, "retrieval": retrieval, "precision": precision}
            run["loadavg_before"] = list(os.getloadavg())
            print(f"[{name} {ref}] run {repeat + 1}/{args.repeats}, load {os.getloadavg()[0]:.1f}", flush=True)
            run["inprocess"] = run_inprocess(code, args, retrieval, precision) if "inprocess" in parts else {}
            run.update(
                run_http(code, world, args, retrieval, precision)
                if "http" in parts
                else {"one_client": {}, "concurrent": {}}
            )
            run["loadavg_after"] = list(os.getloadavg())
            runs.append(run)
            print(json.dumps(run), flush=True)
            summary = save(args, runs, command)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        child = parse(sys.argv[1:])
        sys.path.insert(0, str(child.code))
        inprocess_child(child)
    else:
        raise SystemExit(main())
