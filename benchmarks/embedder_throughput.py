"""Embedder throughput with MusiCNN: uploads per second of 30 s real clips at concurrency 1 and 2, and where an
upload's time goes (decode, resample, mel, network, store write).

    nice -n 10 .venv/bin/python -m benchmarks.embedder_throughput --uploads 14
    .venv/bin/python -m benchmarks.latency_report      # the table in docs/performance.md

The clips: every real recording of the shared audio folder (ENCORE_DATASETS_DIR/audio, see its manifest.csv)
that lasts at least 30 s, cut to 30 s from second 10 (or from the start when shorter than 40 s) in its own format
(OGG/Vorbis 44.1 kHz stereo, WAV 22.05 kHz mono), written to data/perf/embedder/clips. The embedder runs as
deployed (`uvicorn services.embedder.main:create_app`, one process, ENCORE_EMBEDDER_CONCURRENCY=2 encodes at
once) with the default encoder, MusiCNN on ONNX Runtime (both heads: the MSD network gives the vector, MTT the
tags), over a bundle whose codebooks are fit on these clips' own layers (the codebook size does not change the
cost), writing to the Redis online store and the offline parquet through Feast. Nothing listens at the retriever
address, so each upload's notify fails at once (connection refused) and is counted as such.
Per phase (concurrency 1, then 2): `--uploads` POST /embed in all, the clips in turn, each with a new track id.
The stage times are the embedder's own (`encore_embedder_stage_seconds` from /metrics, before and after the
phase): read, decode (container + codec), encode_resample (downmix + resample to 16 kHz), encode_mel (log-mel
patches), encode_network (the two ONNX networks), the rest of encode (tokens and tags), store (Feast write),
notify. The CPU the embedder and this load generator used is read around each phase, with the load average.
Writes docs/results/performance/embedder_throughput.{json,csv}.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "performance"
WORK = ROOT / "data" / "perf" / "embedder"
CLIP_SECONDS = 30.0
API_KEY = "bench-key"
STAGES = ("read", "decode", "encode_resample", "encode_mel", "encode_network", "encode_rest", "store", "notify")


def make_clips(audio_dir: Path, out_dir: Path) -> dict[str, bytes]:
    """30 s cuts of the manifest's recordings of at least 30 s, in their own format; name -> file bytes."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    clips = {}
    for row in csv.DictReader(open(audio_dir / "manifest.csv")):  # noqa: SIM115 - read at once
        if float(row["duration_s"]) < CLIP_SECONDS:
            continue
        source = audio_dir / row["file"]
        path = out_dir / f"{source.stem}-30s{source.suffix}"
        if not path.exists():
            info = sf.info(source)
            start = 10.0 if info.duration >= CLIP_SECONDS + 10 else 0.0
            frames = int(CLIP_SECONDS * info.samplerate)
            samples, rate = sf.read(source, start=int(start * info.samplerate), frames=frames, dtype="float32")
            buffer = io.BytesIO()
            sf.write(buffer, samples, rate, format=info.format, subtype=info.subtype)
            path.write_bytes(buffer.getvalue())
        clips[path.name] = path.read_bytes()
    if not clips:
        raise SystemExit(f"error: no recording of at least {CLIP_SECONDS:.0f} s in {audio_dir}")
    return clips


def build_bundle(artifacts: Path, clips: dict[str, bytes], weights_dir: Path) -> None:
    """A bundle with the embedder's component: codebooks fit on MusiCNN's layers of the clips themselves."""
    from encore.artifacts import BundleBuilder
    from encore.audio import Codebooks, decode_audio, get_encoder
    from encore.audio.content import ContentComponent

    if (artifacts / "CURRENT").exists():
        return
    encoder = get_encoder("musicnn", weights_dir)
    layers = np.stack([encoder.encode_with_tags(decode_audio(data, max_seconds=None))[0] for data in clips.values()])
    books = Codebooks.fit(layers, encoder_info=encoder.describe(), k=4, seed=0)
    with BundleBuilder(artifacts, "bench-embedder", make_current=True) as builder:
        ContentComponent(books, encoder.name).write(builder)


def stage_sums(metrics_text: str) -> dict[str, tuple[float, float]]:
    """stage -> (seconds, count) of encore_embedder_stage_seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name in ("encore_embedder_stage_seconds_sum", "encore_embedder_stage_seconds_count"):
                pair = sums.setdefault(sample.labels["stage"], [0.0, 0.0])
                pair[sample.name.endswith("_count")] = sample.value
    return {stage: (s, c) for stage, (s, c) in sums.items()}


async def upload_all(url: str, clips: dict[str, bytes], n: int, concurrency: int, tag: str) -> tuple[list, dict]:
    """`n` uploads, `concurrency` at a time; returns (latencies of the 200s, counts of other statuses)."""
    import httpx

    names = list(clips)
    todo = iter(range(n))
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            name = names[i % len(names)]
            start = time.perf_counter()
            response = await client.post(
                f"{url}/embed",
                files={"file": (name, clips[name])},
                data={"track_id": f"bench-{tag}-{i}"},
                headers={"X-API-Key": API_KEY},
            )
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                code = f"{response.status_code} {response.json().get('detail', {}).get('code')}"
                failures[code] = failures.get(code, 0) + 1

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, failures


def run_phase(url: str, process: subprocess.Popen, clips: dict[str, bytes], n: int, concurrency: int) -> dict:
    import httpx

    from benchmarks.recommend_profile import _cpu_s

    load_before = round(os.getloadavg()[0], 2)
    before = stage_sums(httpx.get(f"{url}/metrics").text)
    cpu_before, own_before, started = _cpu_s(process), time.process_time(), time.perf_counter()
    latencies, failures = asyncio.run(upload_all(url, clips, n, concurrency, f"c{concurrency}-{time.time_ns()}"))
    elapsed = time.perf_counter() - started
    cpu = _cpu_s(process) - cpu_before
    after = stage_sums(httpx.get(f"{url}/metrics").text)
    ok = max(1, len(latencies))
    spent = {stage: (after[stage][0] - before.get(stage, (0.0, 0.0))[0]) * 1000 / ok for stage in after}
    parts = sum(spent.get(f"encode_{p}", 0.0) for p in ("resample", "mel", "network"))
    stages = {s: spent.get(s, 0.0) for s in STAGES if s != "encode_rest"} | {"encode_rest": spent["encode"] - parts}
    mean_ms = 1000 * float(np.mean(latencies)) if latencies else 0.0
    return {
        "concurrency": concurrency,
        "uploads_ok": len(latencies),
        "failures": failures,
        "seconds": round(elapsed, 2),
        "uploads_per_s": round(len(latencies) / elapsed, 3),
        "latency_p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1) if latencies else None,
        "latency_mean_ms": round(mean_ms, 1),
        **{f"{s}_ms": round(ms, 2) for s, ms in stages.items()},
        "other_ms": round(mean_ms - sum(stages.values()), 2),  # HTTP, multipart, the wait for a free encode slot
        "embedder_cpu_s_per_upload": round(cpu / ok, 3),
        "load_generator_cpu_s_per_upload": round((time.process_time() - own_before) / ok, 4),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def start_embedder(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    from benchmarks.recommend_profile import _free_port, _uvicorn
    from benchmarks.serving_latency import _wait_ready

    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ENCORE_ARTIFACTS_DIR": str(WORK / "artifacts"),
        "ENCORE_FEAST_DATA_DIR": str(WORK / "feast"),
        "ENCORE_FEAST_PROJECT": "bench_embedder",
        "ENCORE_FEAST_ONLINE": "redis",
        "ENCORE_REDIS_URL": args.redis_url,
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_ENCODER": "musicnn",
        "ENCORE_WEIGHTS_DIR": str(args.weights_dir),
        "ENCORE_EMBEDDER_RETRIEVER_URL": f"http://127.0.0.1:{_free_port()}",  # nothing listens there
        "ENCORE_LOG_LEVEL": "warning",
    }
    process = _uvicorn(ROOT, "embedder", port, 1, env, WORK / "logs")
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, 1)
    except BaseException:
        from benchmarks.recommend_profile import _stop

        _stop(process)
        raise
    return process, url


def save(args: argparse.Namespace, phases: list[dict], clips: dict[str, bytes], command: str) -> None:
    from encore.io import atomic_path

    report = {
        "command": command,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "encoder": "musicnn (ONNX Runtime fp32, MSD + MTT networks)",
        "clips": {name: len(data) for name, data in clips.items()},
        "clip_seconds": CLIP_SECONDS,
        "phases": phases,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "embedder_throughput.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    rows = [{k: v for k, v in p.items() if k != "failures"} | {"failures": sum(p["failures"].values())}
            for p in phases]  # fmt: skip
    with atomic_path(args.out / "embedder_throughput.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    from encore.settings import EncoreSettings

    settings = EncoreSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=14, help="uploads per phase")
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--audio-dir", type=Path, default=settings.datasets_dir / "audio")
    parser.add_argument("--weights-dir", type=Path, default=settings.weights_dir)
    parser.add_argument("--redis-url", default=settings.redis_url)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    command = "python -m benchmarks.embedder_throughput " + shlex.join(sys.argv[1:] if argv is None else argv)

    from encore.store import Store, StoreSettings

    clips = make_clips(args.audio_dir, WORK / "clips")
    build_bundle(WORK / "artifacts", clips, args.weights_dir)
    Store(StoreSettings(WORK / "feast", "bench_embedder", "redis", args.redis_url)).apply()
    process, url = start_embedder(args)
    from benchmarks.recommend_profile import _stop

    phases = []
    try:
        asyncio.run(upload_all(url, clips, 2, 1, f"warm-{time.time_ns()}"))  # ONNX Runtime, Feast, pools
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            print(f"[embedder] concurrency {concurrency}, load {os.getloadavg()[0]:.1f}", flush=True)
            phases.append(run_phase(url, process, clips, args.uploads, concurrency))
            print(json.dumps(phases[-1]), flush=True)
            save(args, phases, clips, command)
    finally:
        _stop(process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
