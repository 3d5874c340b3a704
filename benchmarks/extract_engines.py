"""Catalog embedding: files/s of the single-process path against the Ray engine on the same files (issue 23).

    .venv/bin/python -m benchmarks.extract_engines --files 200 --out docs/results/extract_engines

Builds N distinct WAV files (15 s excerpts at different offsets of the real clips in ../shared/data/audio),
then runs `python -m training.extract_audio` over them, each run a fresh process into a fresh folder:
  - local, 1 thread (OMP_NUM_THREADS=1, --threads 1),
  - local, default threads (every core),
  - ray, --actors A (each actor one ONNX session of 1 thread; Ray started by the command, its start-up counted).
Wall time is the whole command (imports, Ray start, assembly). The Ray result is compared with the 1-thread
local result: identical arrays is the claim. Writes results.json and results.md under --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from encore.audio.decode import decode_audio
from encore.audio.extract import load_catalog
from encore.io import write_json_atomic
from training.datasets.dataset import shared_data_root

ROOT = Path(__file__).resolve().parents[1]


def build_files(folder: Path, n: int, seconds: float = 15.0) -> list[Path]:
    """n excerpts of `seconds`, round-robin over the real clips, each starting further into its clip."""
    audio_dir = shared_data_root() / "audio"
    clips = sorted(p for p in audio_dir.iterdir() if p.suffix != ".csv") if audio_dir.is_dir() else []
    if not clips:
        raise SystemExit(f"no audio under {audio_dir} (set ENCORE_DATA_ROOT)")
    folder.mkdir(parents=True, exist_ok=True)
    decoded = [decode_audio(p.read_bytes(), max_seconds=None) for p in clips]
    paths = []
    for i in range(n):
        audio = decoded[i % len(decoded)]
        length = int(seconds * audio.sample_rate)
        total = audio.samples.shape[1]
        start = ((i // len(decoded)) * audio.sample_rate * 3) % max(1, total - length) if total > length else 0
        excerpt = audio.samples[:, start : start + length].T
        path = folder / f"track{i:04d}.wav"
        if not path.exists():
            sf.write(path, excerpt, audio.sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def run_engine(audio: Path, out: Path, label: str, extra: list[str], env: dict[str, str]) -> dict:
    command = [
        sys.executable, "-m", "training.extract_audio", "--audio-dir", str(audio), "--out", str(out),
        "--encoder", "musicnn", "--weights-dir", str(ROOT / "weights"), "--no-progress", "--restart", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=os.environ | env, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr[-3000:]}")
    ids, _, manifest = load_catalog(out)
    print(f"{label}: {len(ids)} files in {wall:.1f} s", file=sys.stderr)
    return {"engine": label, "command": " ".join(command[1:]), "env": env, "files": len(ids),
            "skipped": manifest["counts"]["skipped"], "wall_s": round(wall, 2),
            "files_per_s": round(len(ids) / wall, 3)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / "data" / "bench-extract")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "extract_engines")
    args = p.parse_args(argv)
    audio = args.work / f"audio{args.files}"
    build_files(audio, args.files)
    base = {"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    one = {**base, "OMP_NUM_THREADS": "1"}
    rows = [
        run_engine(audio, args.work / "local1", "local, 1 thread", ["--threads", "1"], one),
        run_engine(audio, args.work / "local", f"local, {os.cpu_count()} threads", [], base),
        run_engine(
            audio,
            args.work / "ray",
            f"ray, {args.actors} actors x 1 thread",
            ["--engine", "ray", "--actors", str(args.actors), "--threads", "1"],
            one,
        ),  # fmt: skip
    ]
    _, local_layers, _ = load_catalog(args.work / "local1")
    ids, ray_layers, _ = load_catalog(args.work / "ray")
    identical = bool(np.array_equal(local_layers, ray_layers))
    _, all_core_layers, _ = load_catalog(args.work / "local")
    result = {
        "files": args.files,
        "encoder": "musicnn (ONNX Runtime, CPU)",
        "identical_ray_vs_local_1_thread": identical,
        "max_abs_diff_local_all_cores_vs_1_thread": float(np.abs(all_core_layers - local_layers).max()),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before": os.getloadavg()[0],
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", result)
    lines = ["| engine | files | wall s | files/s |", "|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['files']} | {r['wall_s']:.1f} | {r['files_per_s']:.2f} |" for r in rows]
    lines.append(f"\nRay result identical to the 1-thread local result: {identical}.")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
