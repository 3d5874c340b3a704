"""Ingest benchmark (issue 21): POST /events throughput in batches of 500, and /recommend latency while events arrive.

    .venv/bin/python -m benchmarks.events_ingest                       # bootstraps a quick world (~4 min on 2 cores)
    .venv/bin/python -m benchmarks.events_ingest --world /tmp/w        # reuse a bootstrapped world (ENCORE_* dirs)
    .venv/bin/python -m benchmarks.events_ingest --online redis --redis-url redis://127.0.0.1:6379/5
    git archive f20c84e | tar -x -C /tmp/before                        # another commit's code, measured beside:
    .venv/bin/python -m benchmarks.events_ingest --world /tmp/w --before /tmp/before --before-label "main f20c84e"

Starts the three services as processes (services/stack.py, the uvicorn options `make run` uses), then, in one run:
1. `idle`: one sequential client asks /recommend for known users for --seconds (p50, p99);
2. `paced_1000`: the same while `--paced-senders` senders together post 1,000 events/s (each one batch of 500
   every senders/2 seconds; more than one, so that a batch slower than half a second does not lower the rate;
   bodies made and encoded before the phase, as by clients on other hosts);
3. `cpu_control`: the same client while a burner process spends the CPU the arriving events cost in phase 2 (the
   embedder's beyond its idle CPU, plus the senders', who share this host), one burst per batch and in the
   embedder's scheduling class: what that much CPU taken from the host costs /recommend, whatever spends it.
   A paced p99 near the control's says the write path adds nothing beyond the CPU it needs; a paced p99 above it
   says the write path gets in the ranker's way (store locks, I/O);
4. `idle_again`: phase 1 once more, after the others: how far the idle p99 itself moves within one run;
5. `ingest`: --senders concurrent senders post batches of 500 as fast as answers come, for --seconds.
`--pin` keeps the read side (ranker, retriever, the timing client) on one CPU and the write side (embedder, senders,
burner) on the other in every phase, as a deployment gives each service cores of its own.
Events are plays/skips/likes/dislikes of catalogue tracks by 2,000 new listeners, with fresh ids (no repeats).
With `--before`, the five phases run first against that checkout's services, then against this one's, on the same
world, in one run: rows say which code (`code`), the load average of the machine at the end of each phase
(`load_1m`), and the CPU each service (all its processes), the senders and the control's burner spent in it, in
% of one core.
Results: `docs/results/events/events_ingest.csv` and the table in `docs/events.md` between its `ingest-table`
markers, both written by this script.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmarks.process_cpu import tree_cpu_s
from services.stack import SERVICES, Stack
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT_CSV = ROOT / "docs/results/events/events_ingest.csv"
DOC = ROOT / "docs/events.md"
TABLE_START, TABLE_END = "<!-- ingest-table start -->", "<!-- ingest-table end -->"
KEY = "events-bench-key"
BATCH = 500
READ_CPU, WRITE_CPU = 0, 1  # --pin
TYPES = ["play"] * 6 + ["skip"] * 2 + ["like", "dislike"]


def world_env(base: Path, args: argparse.Namespace, cache_dir: Path | None = None) -> dict[str, str]:
    """A stack's environment over `base` (bundle, Feast store, the demo world's cache in `cache_dir`, default
    base/data); the online store as `args.online` / `args.redis_url` say. Shared with benchmarks/replay.py."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")},
        "ENCORE_ARTIFACTS_DIR": str(base / "artifacts"),
        "ENCORE_CACHE_DIR": str(cache_dir or base / "data"),
        "ENCORE_FEAST_DATA_DIR": str(base / "feast"),
        "ENCORE_FEAST_PROJECT": args.project,
        "ENCORE_API_KEY": KEY,
        "OMP_NUM_THREADS": "1",
    }
    if args.online == "redis":
        env |= {"ENCORE_FEAST_ONLINE": "redis", "ENCORE_REDIS_URL": args.redis_url}
    return env


def bootstrap(env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "training.bootstrap", "--size", "quick", "--epochs", "2", "--quiet"]
    boot = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if boot.returncode != 0:
        raise SystemExit(f"error: bootstrap failed: {boot.stderr.strip().splitlines()[-3:]}")


class Batches:
    """Fresh batches of 500 events over the catalogue (thread-safe: each call makes its own)."""

    def __init__(self, tracks: list[str], n_users: int = 2000):
        self.tracks, self.users = tracks, [f"bench-{uuid.uuid4().hex[:6]}-{i}" for i in range(n_users)]

    def make(self) -> list[dict]:
        rng = random.Random()
        ts = datetime.now(UTC).isoformat()
        return [
            {
                "id": uuid.uuid4().hex,
                "user_id": rng.choice(self.users),
                "track_id": rng.choice(self.tracks),
                "type": rng.choice(TYPES),
                "ms": rng.randrange(1_000, 240_000),
                "ts": ts,
            }
            for _ in range(BATCH)
        ]


def post_batches(url: str, batches: Batches, stop: Any, interval_s: float | None, out: list,
                 bodies: list[bytes] | None = None) -> None:  # fmt: skip
    """Post batches until `stop`; every `interval_s` (paced) or back to back. Appends (seconds, status, accepted).
    `bodies`: batches made and encoded beforehand, posted in turn (then fresh ones when they run out)."""
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    with httpx.Client(timeout=60, headers=headers) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            body = bodies.pop() if bodies else json.dumps({"events": batches.make()}).encode()
            started = time.perf_counter()
            response = client.post(f"{url}/events", content=body)
            accepted = response.json().get("accepted", 0) if response.status_code == 200 else 0
            out.append((time.perf_counter() - started, response.status_code, accepted))
            if interval_s is not None:
                next_at += interval_s
                stop.wait(max(0.0, next_at - time.monotonic()))


def recommend_latency(url: str, users: list[str], seconds: float) -> dict:
    times, errors = [], 0
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = client.get(f"{url}/recommend", params={"user_id": users[i % len(users)], "k": 20})
            times.append(time.perf_counter() - started)
            errors += response.status_code != 200
            i += 1
    ms = np.asarray(times) * 1000
    return {"recommend_n": len(ms), "recommend_p50_ms": round(float(np.percentile(ms, 50)), 2),
            "recommend_p99_ms": round(float(np.percentile(ms, 99)), 2), "recommend_errors": errors}  # fmt: skip


def ingest_summary(results: list, seconds: float) -> dict:
    if not results:
        return {"events_per_s": 0, "batches": 0, "batch_p50_ms": "", "batch_p99_ms": "", "batch_errors": 0}
    latency = np.asarray([r[0] for r in results]) * 1000
    return {
        "events_per_s": round(sum(r[2] for r in results) / seconds),
        "batches": len(results),
        "batch_p50_ms": round(float(np.percentile(latency, 50)), 1),
        "batch_p99_ms": round(float(np.percentile(latency, 99)), 1),
        "batch_errors": sum(r[1] != 200 for r in results),
    }


def burner(burst_s: float, period_s: float, ready, go, stop, out) -> None:
    """The control's load: every `period_s`, spend `burst_s` of this thread's CPU time spinning, then sleep."""
    ready.put(os.getpid())
    go.wait()
    spent_from = time.thread_time()
    next_at = time.monotonic()
    while not stop.is_set():
        until = time.thread_time() + burst_s
        while time.thread_time() < until:
            pass
        next_at += period_s
        stop.wait(max(0.0, next_at - time.monotonic()))
    out.put(time.thread_time() - spent_from)


def sender(url: str, batches: Batches, go, stop, interval_s: float | None, ahead: int, ready, out) -> None:
    """One sender process: makes `ahead` batches, says it is ready, waits for `go`, posts until `stop`, hands its
    results and the CPU it spent posting back. Paced senders make theirs ahead: the listeners' apps that send
    events run elsewhere, so making and encoding bodies should not take this host's CPU while /recommend is timed."""
    bodies = [json.dumps({"events": batches.make()}).encode() for _ in range(ahead)][::-1]  # pop(): oldest first
    ready.put(True)
    go.wait()
    results: list = []
    spent_from = time.process_time()
    post_batches(url, batches, stop, interval_s, results, bodies)
    out.put((results, time.process_time() - spent_from))


def run_phase(
    name: str, stack: Stack, batches: Batches, users: list[str], args, senders: int, interval,
    burn: tuple[float, float] | None = None,
) -> dict:  # fmt: skip
    """A phase with `senders` sender processes (not threads of this one: building and encoding 500-event bodies
    would hold this process's GIL and add to the /recommend latency this process measures), and with `burn`
    (burst, period) a burner process lowered as the embedder is."""
    context = multiprocessing.get_context("spawn")
    go, stop, ready, out, burnt = context.Event(), context.Event(), context.Queue(), context.Queue(), context.Queue()
    ahead = 0 if interval is None else int(args.seconds / interval) + 2
    processes = [
        context.Process(target=sender, args=(stack.url("embedder"), batches, go, stop, interval, ahead, ready, out))
        for _ in range(senders)
    ]
    if burn is not None:
        burner_ready = context.Queue()
        burner_process = context.Process(target=burner, args=(*burn, burner_ready, go, stop, burnt))
        burner_process.start()
        lower_embedder(burner_ready.get(timeout=120), args)
        if args.pin:
            pin(burner_process.pid, WRITE_CPU)
    for process in processes:
        process.start()
        if args.pin:
            pin(process.pid, WRITE_CPU)
    for _ in processes:
        ready.get(timeout=120)
    cpu_before = {service: tree_cpu_s(process.pid) for service, process in stack.procs.items()}
    started = time.monotonic()
    go.set()
    if name == "ingest":
        for _ in tqdm(range(int(args.seconds)), desc=name, disable=args.quiet):
            time.sleep(1)
        rec = {"recommend_n": 0, "recommend_p50_ms": "", "recommend_p99_ms": "", "recommend_errors": ""}
    else:
        rec = recommend_latency(stack.url("ranker"), users, args.seconds)
    stop.set()
    sent = [out.get(timeout=300) for _ in processes]
    results = [result for part, _ in sent for result in part]
    seconds = time.monotonic() - started
    cpu = {service: tree_cpu_s(stack.procs[service].pid) - before for service, before in cpu_before.items()}
    cpu["senders"] = sum(spent for _, spent in sent)
    burner_cpu = burnt.get(timeout=60) if burn is not None else 0.0
    for process in processes + ([burner_process] if burn is not None else []):
        process.join(timeout=60)
    row = {
        "code": args.code_label,
        "store": args.online,
        "workers": args.workers,
        "phase": name,
        "senders": senders,
        **rec,
        **ingest_summary(results, seconds),
        **{f"{name}_cpu_pct": round(100 * spent / seconds, 1) for name, spent in cpu.items()},
        "burner_cpu_pct": round(100 * burner_cpu / seconds, 1),
        "load_1m": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(row), flush=True)
    return row


def write_results(rows: list[dict], notes: list[str], append: bool) -> None:
    OUT_CSV.parent.mkdir(parents=True, exist_ok=True)
    if append and OUT_CSV.exists():
        with OUT_CSV.open(newline="") as fh:
            rows = [*csv.DictReader(fh), *rows]
        text = DOC.read_text().split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
        notes = [line for line in text.splitlines() if line.startswith("Run ")] + notes
    with OUT_CSV.open("w", newline="") as fh:
        columns = list(dict.fromkeys(c for row in rows for c in row))  # older runs lack the newer columns
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    text = DOC.read_text()
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    DOC.write_text(f"{head}{TABLE_START}\n{markdown_table(rows, notes)}\n{TABLE_END}{tail}")


def markdown_table(rows: list[dict], notes: list[str]) -> str:
    """The docs table, made from the CSV rows only, then the p99 ratios of the runs with a control phase."""
    cols = ["code", "store", "workers", "phase", "senders", "events_per_s", "batch_p50_ms", "batch_p99_ms"]
    cols += ["batch_errors", "recommend_n", "recommend_p50_ms", "recommend_p99_ms", "p99_vs_idle", "recommend_errors"]
    cols += [f"{name}_cpu_pct" for name in ("ranker", "retriever", "embedder", "senders", "burner")] + ["load_1m"]
    ratios = p99_ratios(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = {**row, "p99_vs_idle": ratios.get((row.get("code", ""), row["store"]), {}).get(row["phase"], "")}
        lines.append("| " + " | ".join(str(cells.get(c, "")) for c in cols) + " |")
    controlled = [(key, by_phase) for key, by_phase in ratios.items() if "cpu_control" in by_phase]
    if controlled:
        lines += ["", "/recommend p99 over the run's idle p99, for the runs with a control phase:", ""]
        lines += ["| code | store | paced_1000 | cpu_control | idle_again | ingest events/s |", "|---" * 6 + "|"]
        for (code, store), by_phase in controlled:
            ingest = next((r["events_per_s"] for r in rows if (r.get("code", ""), r["store"], r["phase"]) ==
                           (code, store, "ingest")), "")  # fmt: skip
            cells = [by_phase.get(phase, "") for phase in ("paced_1000", "cpu_control", "idle_again")]
            lines.append(f"| {code} | {store} | " + " | ".join(cells) + f" | {ingest} |")
    return "\n".join([*lines, "", *notes])


def p99_ratios(rows: list[dict]) -> dict[tuple[str, str], dict[str, str]]:
    """(code, store) -> phase -> its /recommend p99 over the idle phase's, formatted ("1.00" for idle)."""
    idle = {(r.get("code", ""), r["store"]): r["recommend_p99_ms"] for r in rows if r["phase"] == "idle"}
    out: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        key, p99 = (row.get("code", ""), row["store"]), row["recommend_p99_ms"]
        base = idle.get(key, "")
        if base not in ("", None) and p99 not in ("", None):
            out.setdefault(key, {})[row["phase"]] = f"{float(p99) / float(base):.2f}"
    return out


def for_each_thread(pid: int, apply: Callable[[int], None]) -> None:
    """`apply(thread id)` for every thread of the process and of its descendants (uvicorn's workers): Linux keeps
    niceness and scheduling policy per thread, and threads started later inherit them."""
    pending = [pid]
    while pending:
        current = pending.pop()
        for task in Path(f"/proc/{current}/task").iterdir():
            apply(int(task.name))
            pending += [int(child) for child in (task / "children").read_text().split()]


def lower_embedder(pid: int, args: argparse.Namespace) -> None:
    """The write path yields the CPU to the ranker's requests, as lower CPU shares would give it in a deployment
    (compose `cpu_shares`, k8s requests): a niceness (still ~10% of a contended core at 10), or SCHED_IDLE (the
    embedder runs only on CPU nobody else wants)."""
    if args.embedder_nice:
        for_each_thread(pid, lambda tid: os.setpriority(os.PRIO_PROCESS, tid, args.embedder_nice))
    if args.embedder_idle:
        for_each_thread(pid, lambda tid: os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0)))


def pin(pid: int, cpu: int) -> None:
    """Keep a process tree (every thread, and those it starts later) on one CPU."""
    for_each_thread(pid, lambda tid: os.sched_setaffinity(tid, {cpu}))


def measure(root: Path, base: Path, args: argparse.Namespace, tracks: list[str], users: list[str]) -> list[dict]:
    """The five phases against the services of checkout `root` over the world copy `base`."""
    env = world_env(base, args) | {"PYTHONPATH": str(root)}
    stack = Stack(env=env, ports={s.name: free_port() for s in SERVICES}, log_dir=base, workers=args.workers, root=root)
    stack.start(timeout_s=600)
    lower_embedder(stack.procs["embedder"].pid, args)
    if args.pin:  # the read side (ranker, retriever, this client) on CPU 0, the write side on CPU 1
        for service, process in stack.procs.items():
            pin(process.pid, WRITE_CPU if service == "embedder" else READ_CPU)
        os.sched_setaffinity(0, {READ_CPU})
    try:
        batches = Batches(tracks)
        interval = args.paced_senders * BATCH / 1000  # each sender's; batches reach the embedder every BATCH/1000 s
        idle = run_phase("idle", stack, batches, users, args, 0, None)
        paced = run_phase("paced_1000", stack, batches, users, args, args.paced_senders, interval)
        period = BATCH / 1000
        # What the arriving events cost beyond idle (the embedder's write path, the senders' bodies), as one burst
        # per batch: the ranker and retriever answer the same requests in both phases.
        extra = float(paced["embedder_cpu_pct"]) - float(idle["embedder_cpu_pct"]) + float(paced["senders_cpu_pct"])
        burst = max(extra, 0.0) / 100 * period
        return [
            idle,
            paced,
            run_phase("cpu_control", stack, batches, users, args, 0, None, burn=(burst, period)),
            run_phase("idle_again", stack, batches, users, args, 0, None),
            run_phase("ingest", stack, batches, users, args, args.senders, None),
        ]
    finally:
        stack.stop()
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=None, help="a bootstrapped world's folder (default: a new one)")
    parser.add_argument("--project", default="encore", help="ENCORE_FEAST_PROJECT of that world")
    parser.add_argument("--online", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--senders", type=int, default=4, help="concurrent senders in the ingest phase")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per service")
    parser.add_argument("--paced-senders", type=int, default=2, help="senders sharing the paced 1,000 events/s")
    parser.add_argument("--append", action="store_true", help="add the rows to the CSV instead of replacing it")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the CSV and the docs alone")
    parser.add_argument("--before", type=Path, default=None, help="another checkout, measured first in the same run")
    parser.add_argument("--before-label", default="before", help="its name in the rows (say, main f20c84e)")
    parser.add_argument("--label", default="this checkout", help="this checkout's name in the rows")
    parser.add_argument(
        "--embedder-nice", type=int, default=0, help="run the embedder (the write path) at this niceness (0: as is)"
    )
    parser.add_argument(
        "--embedder-idle", action="store_true", help="run the embedder under SCHED_IDLE (only on otherwise idle CPU)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="ranker, retriever and the timing client on CPU 0; embedder, senders and burner on CPU 1 (all phases)",
    )
    parser.add_argument("--render", action="store_true", help="only render docs/events.md's table from the CSV")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.render:
        write_results([], [], append=True)
        return 0
    args.load_start = os.getloadavg()[0]
    trees = [(args.before, args.before_label)] if args.before else []
    trees.append((ROOT, args.label))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="encore-events-") as tmp:
        source = args.world or Path(tmp) / "world"
        if args.world is None:
            print("bootstrapping a quick world ...", flush=True)
            bootstrap(world_env(source, args))
        tracks = pd.read_parquet(source / "feast" / "offline" / "track_meta", columns=["track_id"])["track_id"].tolist()
        users = [str(u) for u in pd.read_parquet(source / "feast" / "offline" / "user_profile")["user_id"][:40]]
        for root, label in trees:  # one world: the later code meets the earlier's events too (fresh listeners)
            args.code_label = label
            rows += measure(root, source, args, tracks, users)
    notes = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores ("
        f"{'shared with other jobs, ' if args.load_start > 2 else ''}"
        f"client on the same machine; load average {args.load_start:.1f} at the start), {args.workers} worker(s) per "
        f"service, {args.online} store, quick world ({len(tracks)} tracks{', reused' if args.world else ''}); "
        f"`python -m benchmarks.events_ingest {'--world <dir> --project ' + args.project + ' ' if args.world else ''}"
        f"--online {args.online} --seconds {args.seconds:g} --senders {args.senders} --workers {args.workers} "
        f"--paced-senders {args.paced_senders}"
        f"{f' --embedder-nice {args.embedder_nice}' if args.embedder_nice else ''}"
        f"{' --embedder-idle' if args.embedder_idle else ''}"
        f"{' --pin' if args.pin else ''}"
        f"{' --before <checkout of ' + args.before_label + '>' if args.before else ''}`.",
    ]
    if not args.no_write:
        write_results(rows, notes, args.append)
        print(f"wrote {OUT_CSV.relative_to(ROOT)} and the table in {DOC.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
