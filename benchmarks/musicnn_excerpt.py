"""What MusiCNN's bounded excerpt (MAX_PATCHES patches spread over a long track) costs and saves.

For every real clip longer than the excerpt, and a 3-minute track made of the clips back to back: the
penultimate vector and MTT tags from every 3 s patch against those from the excerpt (cosine, shared top-5
tags), and the time of the whole analysis an upload gets (decode, resample, mel, both networks), both ways.

    .venv/bin/python benchmarks/musicnn_excerpt.py            # writes docs/results/musicnn_encoder/excerpt.csv
    .venv/bin/python benchmarks/musicnn_excerpt.py --table    # the table in docs/encoders.md
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT = REPO_ROOT / "docs" / "results" / "musicnn_encoder" / "excerpt.csv"
KEYS = [
    "clip", "seconds", "patches", "excerpt_patches", "cosine_penultimate", "mtt_top5_shared",
    "full_s", "excerpt_s", "full_cpu_s", "excerpt_cpu_s", "excerpt_x_realtime_cpu", "load_average",
]  # fmt: skip


def analyze(encoder: Any, track: bytes, excerpt: bool) -> tuple[np.ndarray, list[str], float, float]:
    """(penultimate, MTT top-5, wall s, CPU s) of decode -> resample -> mel -> patches -> both networks."""
    from encore.audio import decode_audio, to_encoder_input
    from encore.audio.musicnn_encoder import split_patches, spread_patches

    c0, t0 = time.process_time(), time.perf_counter()
    decoded = decode_audio(track, max_seconds=None)
    patches = split_patches(encoder.front_end(to_encoder_input(decoded.samples, decoded.sample_rate, 16_000)))
    if excerpt:
        patches = spread_patches(patches)
    outputs = {head: encoder.run(patches, head) for head in ("msd", "mtt")}
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    mtt = outputs["mtt"]["tags"].mean(axis=0)
    top = [encoder.tag_names["mtt"][i] for i in np.argsort(-mtt, kind="stable")[:5]]
    return outputs["msd"]["penultimate"].mean(axis=0), top, wall, cpu


def measure(audio_dir: Path, weights_dir: Path, repeats: int) -> list[dict[str, Any]]:
    from audio_encoders import TRACK_SECONDS, _track_ogg  # the same 3-minute track as the encoder benchmark

    from encore.audio import get_encoder
    from encore.audio.musicnn_encoder import MAX_PATCHES, PATCH_FRAMES

    encoder = get_encoder("musicnn", weights_dir, runtime="onnx", threads=1)
    tracks = {p.name: p.read_bytes() for p in sorted(audio_dir.glob("*")) if p.suffix != ".csv"}
    tracks[f"{TRACK_SECONDS:.0f} s of the clips back to back"] = _track_ogg(audio_dir)
    rows = []
    for name, track in tracks.items():
        from encore.audio import decode_audio

        decoded = decode_audio(track, max_seconds=None)
        seconds = decoded.samples.shape[1] / decoded.sample_rate
        patches = round(seconds * 16_000 / 256 / PATCH_FRAMES)
        if patches <= MAX_PATCHES:
            continue
        runs = {mode: [analyze(encoder, track, mode) for _ in range(repeats)] for mode in (False, True)}
        full, part = runs[False][0], runs[True][0]
        rows.append(
            {
                "clip": name,
                "seconds": round(seconds, 1),
                "patches": patches,
                "excerpt_patches": MAX_PATCHES,
                "cosine_penultimate": float(full[0] @ part[0] / np.linalg.norm(full[0]) / np.linalg.norm(part[0])),
                "mtt_top5_shared": len(set(full[1]) & set(part[1])),
                "full_s": statistics.median(r[2] for r in runs[False]),
                "excerpt_s": statistics.median(r[2] for r in runs[True]),
                "full_cpu_s": statistics.median(r[3] for r in runs[False]),
                "excerpt_cpu_s": statistics.median(r[3] for r in runs[True]),
                "load_average": os.getloadavg()[0],
            }
        )
        rows[-1]["excerpt_x_realtime_cpu"] = seconds / rows[-1]["excerpt_cpu_s"]
        print(rows[-1], flush=True)
    return rows


def table(path: Path) -> str:
    lines = [
        "| clip | seconds | patches | cosine (penultimate) | MTT top-5 shared | full CPU s | excerpt CPU s "
        "| x real time (CPU) | full wall s | excerpt wall s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with open(path) as fh:
        for r in csv.DictReader(fh):
            lines.append(
                f"| {r['clip']} | {float(r['seconds']):.0f} | {r['patches']} | {float(r['cosine_penultimate']):.4f} "
                f"| {r['mtt_top5_shared']}/5 | {float(r['full_cpu_s']):.2f} | {float(r['excerpt_cpu_s']):.2f} "
                f"| {float(r['excerpt_x_realtime_cpu']):.0f}x | {float(r['full_s']):.2f} | {float(r['excerpt_s']):.2f} "
                f"| {float(r['load_average']):.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "audio")
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "weights")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out))
        return 0
    if not args.audio_dir.is_dir():
        raise SystemExit(f"error: no real clips at {args.audio_dir}")
    rows = measure(args.audio_dir, args.weights_dir, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=KEYS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in row.items()})
    print(table(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
