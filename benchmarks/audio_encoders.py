"""Seconds per 10 s clip for torch fp32, ONNX fp32 and ONNX int8, side by side, with cosine to torch fp32.

Run:  .venv/bin/python benchmarks/audio_encoders.py [--sizes tiny,full] [--encoders muq,clap,muq-mulan]
          [--clips 4] [--threads N] [--out results/audio_encoders]

Random-weight models in the published architectures (encore.audio.random_weights): speed does not depend
on the weight values, and the cosine measures what export and quantization change. Each encoder is
loaded through get_encoder from a temporary weights folder, exactly as the embedder loads it; the time is
encode() of one 10 s clip (front end + tower), the median over --clips clips after one warm-up clip, the
three runtimes interleaved clip by clip so that a change in machine load hits all of them alike.
Writes OUT/results.json and OUT/audio_encoders.png; the table goes to stdout (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch", "onnx", "onnx-int8")
RATES = {"muq": 24_000, "muq-mulan": 24_000, "clap": 48_000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="tiny,full", help="tiny and/or full (the published architecture)")
    p.add_argument("--encoders", default="muq,clap", help="muq, clap, muq-mulan")
    p.add_argument("--clips", type=int, default=4, help="timed 10 s clips per runtime (after one warm-up)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and ONNX Runtime threads")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "audio_encoders")
    return p.parse_args(argv)


def music_clip(rate: int, seed: int) -> np.ndarray:
    """10 s of harmonics with a beat and a little noise: a deterministic stand-in for a music clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(10 * rate) / rate
    f0 = 110 * 2 ** rng.uniform(0, 2)
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    beat = 0.5 + 0.5 * (np.sin(2 * np.pi * rng.uniform(1.5, 3) * t) > 0)
    return (0.2 * tone * beat + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over pooled layers of the per-layer cosine (MuQ: 12 layers; the others: one vector)."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def bench_encoder(name: str, size: str, clips: int, threads: int, root: Path) -> list[dict[str, Any]]:
    import torch

    from encore.audio import get_encoder
    from encore.audio.onnx_export import export_encoder
    from encore.audio.random_weights import write_random_weights

    start = time.perf_counter()
    write_random_weights(root, name, size=size, seed=0)
    n_params = _n_params(root / name / "model.safetensors")
    export_start = time.perf_counter()
    export_encoder(name, root, int8=True)
    export_s = time.perf_counter() - export_start
    print(f"{name}/{size}: {n_params / 1e6:.1f}M parameters, weights + export {time.perf_counter() - start:.0f} s")

    torch.set_num_threads(threads)
    audio = [music_clip(RATES[name], seed) for seed in range(clips + 1)]
    encoders = {runtime: get_encoder(name, root, runtime=runtime, threads=threads) for runtime in RUNTIMES}
    outputs: dict[str, list[np.ndarray]] = {runtime: [] for runtime in RUNTIMES}
    seconds: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
    for i, clip in enumerate(audio):
        # Runtimes interleaved clip by clip, in a rotating order: load changes on a shared machine hit all three.
        for runtime in RUNTIMES[i % 3 :] + RUNTIMES[: i % 3]:
            t0 = time.perf_counter()
            outputs[runtime].append(encoders[runtime].encode(clip))
            if i:  # clip 0 warms up (allocations, ONNX Runtime's first-run graph work)
                seconds[runtime].append(time.perf_counter() - t0)
    size_mb = sum(p.stat().st_size for p in (root / name / "onnx").glob("*.onnx")) / 2**20
    rows = []
    for runtime in RUNTIMES:
        cosines = [cosine(a, b) for a, b in zip(outputs[runtime], outputs["torch"], strict=True)]
        rows.append(
            {
                "encoder": name,
                "size": size,
                "params_m": round(n_params / 1e6, 1),
                "runtime": runtime,
                "seconds_per_clip": statistics.median(seconds[runtime]),
                "front_end_seconds": _front_end_seconds(encoders[runtime], audio[1]),
                "cosine_min": min(cosines),
                "cosine_mean": statistics.fmean(cosines),
                "export_seconds": export_s,
                "onnx_mb": size_mb,
                "shape": list(outputs[runtime][0].shape),
            }
        )
    del encoders
    torch_s = rows[0]["seconds_per_clip"]
    for row in rows:
        row["speedup_vs_torch"] = torch_s / row["seconds_per_clip"]
    for path in (root / name).rglob("*"):
        if path.is_file():
            path.unlink()  # full-size folders are GBs: free them before the next encoder
    return rows


def _n_params(path: Path) -> int:
    """Parameter count from the safetensors header alone (no need to load GBs of weights)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())


def _front_end_seconds(encoder: Any, clip: np.ndarray) -> float:
    from encore.audio.windows import split_windows

    frames = split_windows(clip, encoder.sample_rate, encoder.window_seconds, fill="repeat").frames
    t0 = time.perf_counter()
    encoder.front_end(frames)
    return time.perf_counter() - t0


def table(rows: list[dict[str, Any]]) -> str:
    header = "| encoder | size | params | runtime | s / 10 s clip | of which mel | vs torch | cosine to torch (min) |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['encoder']} | {r['size']} | {r['params_m']}M | {r['runtime']} | {r['seconds_per_clip']:.3f} "
            f"| {r['front_end_seconds']:.3f} | {r['speedup_vs_torch']:.2f}x | {r['cosine_min']:.5f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["encoder"], r["size"]) for r in rows}, key=lambda g: (g[1] != "full", g))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(groups), 3.6))
    width = 0.27
    for j, runtime in enumerate(RUNTIMES):
        values = [
            next(r["seconds_per_clip"] for r in rows if (r["encoder"], r["size"]) == g and r["runtime"] == runtime)
            for g in groups
        ]
        ax.bar(np.arange(len(groups)) + (j - 1) * width, values, width, label=runtime)
    ax.set_xticks(np.arange(len(groups)), [f"{e}\n{s}" for e, s in groups])
    ax.set_ylabel("seconds per 10 s clip")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Audio encoders on CPU: torch fp32 vs ONNX fp32 vs ONNX int8")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="encore-encoders-") as tmp:
        for size in args.sizes.split(","):
            for name in args.encoders.split(","):
                rows.extend(bench_encoder(name, size, args.clips, args.threads, Path(tmp)))
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    plot(rows, args.out / "audio_encoders.png")
    print(table(rows))
    print(f"load average before {load_before}, after {machine['loadavg_after']}; threads {args.threads}")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'audio_encoders.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
