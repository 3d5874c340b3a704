"""CPU time of one POST /events batch in-process (issue 21): what a 500-event batch costs the embedder, without HTTP.

    .venv/bin/python -m benchmarks.events_batch_cpu --online sqlite
    .venv/bin/python -m benchmarks.events_batch_cpu --online redis --redis-url redis://127.0.0.1:6412/0
    .venv/bin/python -m benchmarks.events_batch_cpu --profile            # plus a cProfile of the batches

A real Store in a temp folder (Feast applied, `--tracks` tracks with `--dim`-float content vectors materialized),
the embedder's own `EventService` (per-event validation, track check, `EventLog.ingest`: idempotency set, parquet
part with fsync, aggregates, commit, online push), fed `--batches` batches of 500 fresh events by 2,000 listeners
(the mix of benchmarks/events_ingest.py). Per batch: wall time and this process's CPU time (`time.process_time`;
the Redis server's own CPU is not in it). The first `--warmup` batches are left out (imports, first reads).
Then `--http-batches` more go through the embedder's app (a TestClient): `http_cpu_ms_mean` is the CPU of the
whole POST /events, HTTP handling and FastAPI's body parsing included.
On a shared machine the CPU time is the steadier number: 500 / CPU seconds per batch is the rate one unloaded
core would sustain for this part of the path. Writes `docs/results/events/events_batch_cpu.json` (rows keyed by
`--label` and store, so a run of another checkout can be added beside: run this file with that checkout first on
PYTHONPATH) and the table between the `ingest-cpu-table` markers of docs/events.md, unless `--no-write`.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.settings import EmbedderSettings
from encore.store import Store, StoreSettings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs/results/events/events_batch_cpu.json"
DOC = ROOT / "docs/events.md"
TABLE_START, TABLE_END = "<!-- ingest-cpu-table start -->", "<!-- ingest-cpu-table end -->"
COLUMNS = ["label", "store", "batches", "cpu_ms_p50", "cpu_ms_mean", "events_per_cpu_s", "parse_cpu_ms_mean",
           "http_cpu_ms_mean", "wall_ms_p50", "events_per_wall_s", "load_average_1m", "at"]  # fmt: skip
BATCH = 500
TYPES = ["play"] * 6 + ["skip"] * 2 + ["like", "dislike"]


def _store(folder: Path, args: argparse.Namespace) -> tuple[Store, list[str]]:
    settings = StoreSettings(
        data_dir=folder / "feast", project=f"evcpu_{uuid.uuid4().hex[:8]}", online=args.online,
        redis_url=args.redis_url,
    )  # fmt: skip
    store = Store(settings)
    store.apply()
    rng = np.random.default_rng(0)
    ids = [f"t{i:05d}" for i in range(args.tracks)]
    meta = pd.DataFrame(
        {fn.TRACK_ID: ids, "artist_id": "a", "genre": "rock", "key": 0, "mode": 1, "language": "en",
         "release_year": 2000, "popularity": np.float32(0.1)}
    )  # fmt: skip
    content = pd.DataFrame(
        {fn.TRACK_ID: ids, "embedding": list(rng.standard_normal((len(ids), args.dim)).astype(np.float32)),
         "tokens": list(rng.integers(0, 32, (len(ids), 4))), "encoder": "mfcc", "encoder_revision": "r",
         "typicality": 0.5, "tags": ""}
    )  # fmt: skip
    store.materialize_frames(None, meta, content)
    return store, ids


def _batch(tracks: list[str], users: list[str], rng: random.Random) -> list[dict]:
    ts = datetime.now(UTC).isoformat()
    return [
        {"id": uuid.uuid4().hex, "user_id": rng.choice(users), "track_id": rng.choice(tracks),
         "type": rng.choice(TYPES), "ms": rng.randrange(1_000, 240_000), "ts": ts}
        for _ in range(BATCH)
    ]  # fmt: skip


def _parse_cpu_ms(batches: list[list[dict]]) -> float:
    """CPU per batch of what the route does before `EventService.ingest`: the JSON body parsed into `RawBatch`
    (FastAPI's own parsing and the HTTP framing are not counted)."""
    from services.embedder.events_routes import RawBatch

    bodies = [json.dumps({"events": batch}).encode() for batch in batches]
    started = time.process_time()
    for body in bodies:
        RawBatch.model_validate_json(body)
    return round((time.process_time() - started) * 1000 / len(bodies), 1)


def _http_cpu_ms(store: Store, bodies: list[bytes], folder: Path) -> float:
    """CPU per POST /events through the embedder's own app (middleware, auth, FastAPI's parsing into `RawBatch`,
    the route, `EventService.ingest`, the response), over the same store: a TestClient in this process, bodies
    encoded beforehand (the client's share of the request is counted too, uvicorn's socket handling is not)."""
    from fastapi.testclient import TestClient

    from services.embedder.main import create_app

    key = "bench-key"
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    settings = EmbedderSettings(api_key=key, artifacts_dir=folder / "no-bundle")  # no encoder to load: events only
    with TestClient(create_app(settings, store=store)) as client:
        for body in bodies[:1]:  # warm-up: the app's first request
            assert client.post("/events", content=body, headers=headers).status_code == 200
        started = time.process_time()
        for body in bodies[1:]:
            response = client.post("/events", content=body, headers=headers)
            assert response.status_code == 200, response.text
        return round((time.process_time() - started) * 1000 / (len(bodies) - 1), 1)


def run(args: argparse.Namespace) -> dict:
    from services.embedder.events_routes import EventService

    with tempfile.TemporaryDirectory(prefix="encore-evcpu-") as tmp:
        store, tracks = _store(Path(tmp), args)
        service = EventService(store, EmbedderSettings())
        rng = random.Random(0)
        users = [f"bench-{i}" for i in range(args.users)]
        batches = [_batch(tracks, users, rng) for _ in range(args.batches + args.warmup)]
        for batch in batches[: args.warmup]:
            service.ingest(batch)
        parse_ms = _parse_cpu_ms(batches[args.warmup :])
        profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not waits
        walls, cpus = [], []
        for batch in batches[args.warmup :]:
            wall, cpu = time.perf_counter(), time.process_time()
            if profiler is not None:
                profiler.enable()
            result = service.ingest(batch)
            if profiler is not None:
                profiler.disable()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert result.accepted == BATCH, result
        parts = len(service.log.parts())
        service.log.close()
        http_ms = None
        if args.http_batches:
            bodies = [json.dumps({"events": _batch(tracks, users, rng)}).encode() for _ in range(args.http_batches + 1)]
            http_ms = _http_cpu_ms(store, bodies, Path(tmp))
    if profiler is not None:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(args.profile_lines)
    wall_ms, cpu_ms = np.asarray(walls) * 1000, np.asarray(cpus) * 1000
    return {
        "label": args.label,
        "store": args.online,
        "batches": args.batches,
        "events_per_batch": BATCH,
        "listeners": args.users,
        "tracks": args.tracks,
        "dim": args.dim,
        "wall_ms_p50": round(float(np.percentile(wall_ms, 50)), 1),
        "wall_ms_mean": round(float(wall_ms.mean()), 1),
        "cpu_ms_p50": round(float(np.percentile(cpu_ms, 50)), 1),
        "cpu_ms_mean": round(float(cpu_ms.mean()), 1),
        "events_per_cpu_s": round(BATCH / float(cpu_ms.mean() / 1000)),
        "events_per_wall_s": round(BATCH / float(wall_ms.mean() / 1000)),
        "parse_cpu_ms_mean": parse_ms,
        "http_cpu_ms_mean": http_ms,
        "offline_parts": parts,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
        "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--online", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--tracks", type=int, default=240)
    parser.add_argument("--dim", type=int, default=200, help="content vector length (the profile's length)")
    parser.add_argument(
        "--http-batches",
        type=int,
        default=10,
        help="then this many batches POSTed through the embedder app (http_cpu_ms_mean); 0: none",
    )
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the timed batches to stderr")
    parser.add_argument("--profile-lines", type=int, default=40)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--table", action="store_true", help="only rewrite the docs table from the JSON")
    args = parser.parse_args(argv)
    if args.table:
        write_table(json.loads(OUT.read_text()))
        return 0
    row = run(args)
    print(json.dumps(row), flush=True)
    if not args.no_write:
        rows = json.loads(OUT.read_text()) if OUT.exists() else []
        rows = [r for r in rows if (r["label"], r["store"]) != (row["label"], row["store"])] + [row]
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(rows, indent=1) + "\n")
        write_table(rows)
    return 0


def write_table(rows: list[dict]) -> None:
    """The docs table, made from the JSON rows only."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join("" if row.get(c) is None else str(row[c]) for c in COLUMNS) + " |" for row in rows]
    text = DOC.read_text()
    if TABLE_START not in text:
        return
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    DOC.write_text(f"{head}{TABLE_START}\n" + "\n".join(lines) + f"\n{TABLE_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
