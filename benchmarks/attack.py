"""Attack benchmark (issue 25): replay the reproduced attacks against a running stack on 127.0.0.1 only.

    .venv/bin/python -m benchmarks.attack                      # ~4-6 min on 2 cores; writes the CSV and the table
    .venv/bin/python -m benchmarks.attack --slow-connections 500 --attacks oversized,uploads

Bootstraps a quick world (SQLite store, temp folder), starts the three services as processes through
services/stack.py (so with the same uvicorn options `make run` uses), then for each attack measures
/recommend (one sequential client: p50, p99, non-200 answers, degraded answers) and each service's resident
memory, before, during (peak) and after it:
- `oversized`: 4 parallel senders, for --seconds, of 50 MB JSON bodies (`[{},{},...]`) to POST /admin/reload of
  all three services and the retriever's POST /items, without a key, alternately with a Content-Length and
  chunked; one sender in four carries the key (the 413 path).
- `slow`: --slow-connections connections to the ranker that send part of their headers and then one byte every
  5 s, plus a few with the key whose bodies trickle to the write routes; counts how many the server closed.
- `uploads`: 16, then 64 (--uploads) concurrent 49.5 MB WAV uploads to POST /embed with the key (half with
  `Expect: 100-continue`): the embedder's peak memory should not grow with the count.
Every attack is bounded in count and time, and talks to 127.0.0.1 only. Results: `docs/results/attack/attack.csv`
and the table in `docs/security.md` between its `attack-table` markers, both written by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

from services.stack import SERVICES, Stack
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT_CSV = ROOT / "docs/results/attack/attack.csv"
DOC = ROOT / "docs/security.md"
TABLE_START, TABLE_END = "<!-- attack-table start -->", "<!-- attack-table end -->"
HOST = "127.0.0.1"
KEY = "attack-bench-key"
JSON_BODY_MB = 50
UPLOAD_MB = 49.5


# --- measuring ---------------------------------------------------------------------------------------------


def rss_mb(proc: subprocess.Popen) -> float:
    try:
        parent = psutil.Process(proc.pid)
        procs = [parent, *parent.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


@dataclass
class Probe:
    """One sequential /recommend client and a memory sampler, in a thread, until stopped."""

    stack: Stack
    users: list[str]
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    degraded: int = 0
    peak_rss: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(3)
        last_sample = 0.0
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                if time.monotonic() - last_sample > 0.25:
                    self._sample_rss()
                    last_sample = time.monotonic()
                start = time.perf_counter()
                try:
                    resp = client.get(
                        f"{self.stack.url('ranker')}/recommend", params={"user_id": rng.choice(self.users)}
                    )
                except httpx.HTTPError as exc:
                    self.errors[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                if resp.status_code != 200:
                    self.errors[str(resp.status_code)] += 1
                    continue
                self.latencies.append((time.perf_counter() - start) * 1000)
                self.degraded += bool(resp.json().get("degraded"))
                time.sleep(0.02)  # ~40 requests/s: a steady client, not a load test
        self._sample_rss()

    def _sample_rss(self) -> None:
        for name, proc in self.stack.procs.items():
            self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss_mb(proc))

    def summary(self) -> dict:
        lat = np.array(self.latencies or [np.nan])
        return {
            "recommend_ok": len(self.latencies),
            "recommend_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "recommend_p99_ms": round(float(np.percentile(lat, 99)), 1),
            "recommend_errors": sum(self.errors.values()),
            "recommend_degraded": self.degraded,
            **{
                f"rss_{name}_mb": round(self.peak_rss.get(name, float("nan")), 1)
                for name in ("ranker", "retriever", "embedder")
            },
        }


@contextmanager
def probing(stack: Stack, users: list[str]):
    probe = Probe(stack, users)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        probe._stop.set()
        thread.join(30)


def measure_idle(stack: Stack, users: list[str], seconds: float) -> dict:
    with probing(stack, users) as probe:
        time.sleep(seconds)
    return probe.summary()


# --- the attacks -------------------------------------------------------------------------------------------


def _status(head: bytes) -> str:
    parts = head.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and head.startswith(b"HTTP/") else "no-answer"


async def send_body(port: int, path: str, body: bytes, *, chunked: bool, key: str | None) -> tuple[str, int]:
    """POST `body` as fast as the server takes it; stops when an answer arrives. Returns (status, bytes sent)."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as exc:
        return type(exc).__name__, 0
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    auth = f"X-API-Key: {key}\r\n" if key else ""
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{length}\r\n{auth}\r\n"
    answer = asyncio.create_task(reader.read(4096))
    sent = 0
    try:
        writer.write(head.encode())
        for start in range(0, len(body), 1 << 20):
            if answer.done():
                break
            chunk = body[start : start + (1 << 20)]
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer.drain()
            sent += len(chunk)
        if chunked and not answer.done():
            writer.write(b"0\r\n\r\n")
        status = _status(await asyncio.wait_for(answer, 30))
    except (OSError, TimeoutError) as exc:
        status = _status(answer.result()) if answer.done() and not answer.exception() else type(exc).__name__
    finally:
        answer.cancel()
        writer.close()
    return status, sent


async def oversized(stack: Stack, seconds: float) -> Counter:
    body = b"[" + b"{}," * (JSON_BODY_MB * 2**20 // 3) + b"{}]"
    targets = [(stack.ports[name], "/admin/reload") for name in ("ranker", "retriever", "embedder")]
    targets.append((stack.ports["retriever"], "/items"))
    outcomes: Counter = Counter()
    megabytes = [0]
    deadline = time.monotonic() + seconds

    async def sender(i: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            port, path = targets[n % len(targets)]
            status, sent = await send_body(port, path, body, chunked=n % 2 == 1, key=KEY if i == 0 else None)
            outcomes[status] += 1
            megabytes[0] += sent / 2**20
            n += 1

    await asyncio.gather(*(sender(i) for i in range(4)))
    outcomes["MB_sent_total"] = round(megabytes[0])
    return outcomes


async def slow_client(port: int, head: bytes, deadline: float) -> tuple[str, float]:
    """Send `head`, then one byte every 5 s until the server answers or closes (or the deadline)."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as exc:
        return f"connect-{type(exc).__name__}", 0.0
    try:
        writer.write(head)
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(4096), 5)
                return ("closed-" + _status(data) if data else "closed"), time.monotonic() - started
            except TimeoutError:
                writer.write(b"a")
                await writer.drain()
        return "still-open", time.monotonic() - started
    except OSError:
        return "reset", time.monotonic() - started
    finally:
        writer.close()


async def slow(stack: Stack, seconds: float, n: int) -> Counter:
    deadline = time.monotonic() + seconds
    partial = b"GET /recommend?user_id=u0 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    tasks = [slow_client(stack.ports["ranker"], partial, deadline) for _ in range(n)]
    for name, path in (("ranker", "/admin/reload"), ("retriever", "/items"), ("embedder", "/embed")):
        kind = "multipart/form-data; boundary=b" if path == "/embed" else "application/json"
        body_head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nX-API-Key: {KEY}\r\nContent-Type: {kind}\r\n"
        body_head += "Content-Length: 100000\r\n\r\n--b"
        tasks.append(slow_client(stack.ports[name], body_head.encode(), deadline))
    results = await asyncio.gather(*tasks)
    outcomes = Counter(status for status, _ in results)
    closed = sorted(t for status, t in results if status.startswith(("closed", "reset")))
    if closed:
        outcomes["median_s_to_close"] = round(closed[len(closed) // 2], 1)
    return outcomes


def wav_upload(megabytes: float) -> bytes:
    import soundfile as sf

    rate, channels = 44_100, 2
    frames = int(megabytes * 2**20 / (2 * channels))
    rng = np.random.default_rng(0)
    t = np.arange(frames) / rate
    tone = 0.2 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(t)))
    audio = np.stack([tone, tone], axis=1) + 0.01 * rng.standard_normal((frames, channels))
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def uploads(stack: Stack, wav: bytes, count: int) -> Counter:
    import aiohttp

    async def one(session: aiohttp.ClientSession, i: int) -> str:
        form = aiohttp.FormData()
        form.add_field("file", wav, filename=f"attack-{i}.wav", content_type="audio/wav")
        try:
            # half send `Expect: 100-continue` (as curl does for large bodies): they read the 503 before sending
            # the body; the others are cut off mid-body, which their client may report as a reset instead
            post = session.post(
                f"{stack.url('embedder')}/embed", data=form, headers={"X-API-Key": KEY}, expect100=i % 2 == 1
            )
            async with post as resp:
                await resp.read()
                return str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=count)) as session:
        return Counter(await asyncio.gather(*(one(session, i) for i in range(count))))


# --- the run -----------------------------------------------------------------------------------------------


def bootstrap(base: Path) -> tuple[dict[str, str], list[str]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")},
        "ENCORE_ARTIFACTS_DIR": str(base / "artifacts"),
        "ENCORE_CACHE_DIR": str(base / "data"),
        "ENCORE_FEAST_DATA_DIR": str(base / "feast"),
        "ENCORE_API_KEY": KEY,
        "ENCORE_RETRIEVER_REFRESH_S": "0",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "training.bootstrap", "--size", "quick", "--epochs", "2", "--quiet"]
    boot = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if boot.returncode != 0:
        raise SystemExit(f"error: bootstrap failed: {boot.stderr.strip().splitlines()[-1:]}")
    info = json.loads(boot.stdout.strip().splitlines()[-1])
    return env, [info["example_user"], *[f"u{i}" for i in range(1, 40)], "somebody-new"]


def run_attack(
    stack: Stack, users: list[str], name: str, attack: Callable[[], object], settle_s: float, idle_s: float
) -> list[dict]:
    rows = [{"attack": name, "phase": "before", **measure_idle(stack, users, idle_s), "outcomes": ""}]
    print(f"[{name}] before: {rows[-1]}", flush=True)
    with probing(stack, users) as probe:
        started = time.monotonic()
        outcomes = attack()
        during_s = time.monotonic() - started
    rows.append({"attack": name, "phase": "during", **probe.summary(), "outcomes": _fmt(outcomes, during_s)})
    print(f"[{name}] during: {rows[-1]}", flush=True)
    time.sleep(settle_s)
    rows.append({"attack": name, "phase": "after", **measure_idle(stack, users, idle_s), "outcomes": ""})
    print(f"[{name}] after: {rows[-1]}", flush=True)
    return rows


def _fmt(outcomes: object, seconds: float) -> str:
    items = sorted(dict(outcomes).items(), key=lambda kv: str(kv[0])) if isinstance(outcomes, Counter) else []
    return " ".join(f"{k}={v}" for k, v in items) + f" ({seconds:.0f} s)"


def write_results(rows: list[dict], notes: list[str]) -> None:
    OUT_CSV.parent.mkdir(parents=True, exist_ok=True)
    with OUT_CSV.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(rows, notes)
    text = DOC.read_text()
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    DOC.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")


def markdown_table(rows: list[dict], notes: list[str]) -> str:
    """The docs table, made from the CSV rows only."""
    cols = ["attack", "phase", "recommend_p50_ms", "recommend_p99_ms", "recommend_errors", "recommend_degraded"]
    cols += ["rss_ranker_mb", "rss_retriever_mb", "rss_embedder_mb", "outcomes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in rows]
    return "\n".join([*lines, "", *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default="oversized,uploads,slow", help="comma-separated: oversized, uploads, slow")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the oversized and slow attacks")
    parser.add_argument("--slow-connections", type=int, default=2000)
    parser.add_argument(
        "--uploads", type=lambda v: [int(x) for x in v.split(",")], default=[16, 64], help="concurrent uploads per run"
    )
    parser.add_argument("--slow-seconds", type=float, default=75.0, help="length of the slow attack")
    parser.add_argument("--idle-seconds", type=float, default=8.0, help="measuring time before and after each attack")
    args = parser.parse_args(argv)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = set(attacks) - {"oversized", "uploads", "slow"}
    if unknown:
        print(f"error: unknown attack(s) {sorted(unknown)}; choose from oversized, uploads, slow", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="encore-attack-") as tmp:
        base = Path(tmp)
        print("bootstrapping a quick world ...", flush=True)
        env, users = bootstrap(base)
        stack = Stack(env=env, ports={s.name: free_port() for s in SERVICES}, log_dir=base)
        stack.start(timeout_s=300)
        rows: list[dict] = []
        try:
            if "oversized" in attacks:
                rows += run_attack(
                    stack, users, "oversized", lambda: asyncio.run(oversized(stack, args.seconds)), 3, args.idle_seconds
                )
            if "uploads" in attacks:
                wav = wav_upload(UPLOAD_MB)
                for count in args.uploads:
                    run = lambda count=count: asyncio.run(uploads(stack, wav, count))  # noqa: E731
                    rows += run_attack(stack, users, f"uploads_x{count}", run, 3, args.idle_seconds)
            if "slow" in attacks:
                # long enough for the body deadline (ENCORE_BODY_TIMEOUT_S, 60 s) to close the trickling bodies
                run = lambda: asyncio.run(slow(stack, args.slow_seconds, args.slow_connections))  # noqa: E731
                rows += run_attack(stack, users, f"slow_x{args.slow_connections}", run, 3, args.idle_seconds)
        finally:
            stack.stop()
        logs = "".join((base / f"{s.name}.log").read_text(errors="replace") for s in SERVICES)
    notes = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores (shared with other jobs), "
        f"one worker per service, SQLite store; `python -m benchmarks.attack --attacks {args.attacks} "
        f"--seconds {args.seconds:g} --uploads {','.join(map(str, args.uploads))} "
        f"--slow-connections {args.slow_connections} --slow-seconds {args.slow_seconds:g}`.",
        f"The API key appears in the services' logs: {'YES' if KEY in logs else 'no'}.",
    ]
    write_results(rows, notes)
    print(f"wrote {OUT_CSV.relative_to(ROOT)} and the table in {DOC.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
