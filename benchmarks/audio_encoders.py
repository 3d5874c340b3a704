"""Seconds per 10 s clip for torch fp32, ONNX fp32 and ONNX int8, side by side, with cosine to torch fp32.

Run:  .venv/bin/python benchmarks/audio_encoders.py [--sizes tiny,full] [--encoders muq,clap,muq-mulan]
          [--clips 4] [--threads N] [--out results/audio_encoders]

Random-weight models in the published architectures (encore.audio.random_weights): speed does not depend
on the weight values, and the cosine measures what export and quantization change. Each encoder is
loaded through get_encoder from a temporary weights folder, exactly as the embedder loads it; the time is
encode() of one 10 s clip (front end + tower), the median over --clips clips after one warm-up clip, the
three runtimes interleaved clip by clip so that a change in machine load hits all of them alike.
Writes OUT/results.json and OUT/audio_encoders.png; the table goes to stdout (docs/performance.md).

MusiCNN (`--encoders musicnn`) runs on its real weights instead (--weights-dir, copied to a temporary folder
and exported there): seconds per 10 s excerpt of the real clips (--audio-dir; synthetic music without them),
the cosine and max abs difference of each runtime to the original TF graph (tests/fixtures/musicnn_reference.npz,
every layer of both checkpoints), and the whole encode of a 3-minute OGG track built from the real clips
(decode, resample, mel, network), median of 3 runs. It also writes OUT/musicnn.csv and OUT/musicnn_track.csv
(docs/encoders.md):

    .venv/bin/python benchmarks/audio_encoders.py --sizes published --encoders musicnn --clips 5 --threads 1 \
        --out docs/results/musicnn_encoder
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
RATES = {"muq": 24_000, "muq-mulan": 24_000, "clap": 48_000, "musicnn": 16_000}
REFERENCE = REPO_ROOT / "tests" / "fixtures" / "musicnn_reference.npz"
TRACK_SECONDS = 180.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="tiny,full", help="tiny and/or full (the published architecture)")
    p.add_argument("--encoders", default="muq,clap", help="muq, clap, muq-mulan")
    p.add_argument("--clips", type=int, default=4, help="timed 10 s clips per runtime (after one warm-up)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and ONNX Runtime threads")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "audio_encoders")
    p.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "weights", help="MusiCNN's real weights")
    p.add_argument("--audio-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "audio")
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


def bench_musicnn(args: argparse.Namespace, root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-10 s rows like bench_encoder's plus the TF-reference columns, 3-minute-track rows) on real weights."""
    import shutil

    import torch

    from encore.audio import get_encoder
    from encore.audio.musicnn_encoder import HEADS
    from encore.audio.onnx_export import export_encoder

    for folder in HEADS.values():
        if not (args.weights_dir / folder / "model.safetensors").is_file():
            raise SystemExit(f"error: no {args.weights_dir / folder}; run python -m encore.audio.musicnn_weights")
        shutil.copytree(args.weights_dir / folder, root / folder, ignore=shutil.ignore_patterns("onnx"))
    export_start = time.perf_counter()
    export_encoder("musicnn", root, int8=True)
    export_s = time.perf_counter() - export_start
    torch.set_num_threads(args.threads)
    encoders = {runtime: get_encoder("musicnn", root, runtime=runtime, threads=args.threads) for runtime in RUNTIMES}
    clips = _real_excerpts(args.audio_dir, args.clips + 1) or [music_clip(16_000, i) for i in range(args.clips + 1)]
    seconds: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
    cpu_seconds: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
    outputs: dict[str, list[np.ndarray]] = {runtime: [] for runtime in RUNTIMES}
    for i, clip in enumerate(clips):
        for runtime in RUNTIMES[i % 3 :] + RUNTIMES[: i % 3]:
            c0, t0 = time.process_time(), time.perf_counter()
            outputs[runtime].append(encoders[runtime].encode(clip))
            if i:
                seconds[runtime].append(time.perf_counter() - t0)
                cpu_seconds[runtime].append(time.process_time() - c0)
    size_mb = sum(p.stat().st_size for p in (root / "musicnn-msd" / "onnx").glob("*.onnx")) / 2**20
    rows = []
    for runtime, encoder in encoders.items():
        cosines = [cosine(a, b) for a, b in zip(outputs[runtime], outputs["torch"], strict=True)]
        t0 = time.perf_counter()
        encoder.patches(clips[1])
        rows.append(
            {
                "encoder": "musicnn",
                "size": "published",
                "params_m": 0.8,
                "runtime": runtime,
                "seconds_per_clip": statistics.median(seconds[runtime]),
                "cpu_seconds_per_clip": statistics.median(cpu_seconds[runtime]),
                "front_end_seconds": time.perf_counter() - t0,
                "cosine_min": min(cosines),
                "cosine_mean": statistics.fmean(cosines),
                "export_seconds": export_s,
                "onnx_mb": size_mb,
                "shape": list(outputs[runtime][0].shape),
                "clips": "real" if args.audio_dir.is_dir() else "synthetic",
                **_reference_agreement(encoder),
            }
        )
    for row in rows:
        row["speedup_vs_torch"] = rows[0]["seconds_per_clip"] / row["seconds_per_clip"]
    track = _track_ogg(args.audio_dir)
    return rows, [_time_track(runtime, encoder, track) for runtime, encoder in encoders.items()]


def _real_excerpts(audio_dir: Path, n: int) -> list[np.ndarray]:
    """The first 10 s of up to n real clips at 16 kHz mono (clips shorter than 10 s skipped)."""
    from encore.audio import decode_audio, to_encoder_input

    excerpts = []
    for path in sorted(audio_dir.glob("*")) if audio_dir.is_dir() else []:
        if path.suffix == ".csv" or len(excerpts) == n:
            continue
        decoded = decode_audio(path.read_bytes(), max_seconds=10.0)
        if decoded.samples.shape[1] >= 10 * decoded.sample_rate:
            excerpts.append(to_encoder_input(decoded.samples, decoded.sample_rate, 16_000))
    return excerpts


def _reference_agreement(encoder: Any) -> dict[str, float]:
    """Min cosine and max abs difference to the TF graph over both checkpoints' tags, penultimate and pooled
    layers (per patch, per layer), from the fixture's stored log-mel."""
    with np.load(REFERENCE) as ref:
        patches = ref["logmel"].reshape(-1, 187, 96)
        cosines, diffs = [], []
        for head in ("msd", "mtt"):
            out = encoder.run(patches, head)
            for name in ("tags", "penultimate", "pooled"):
                got, want = out[name], ref[f"{name}_{head}"].reshape(out[name].shape)
                bounds = [0, 561, 625, 689, 753] if name == "pooled" else [0, got.shape[1]]
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                    a, b = got[:, lo:hi], want[:, lo:hi]
                    cosines.append(
                        float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
                    )
                    diffs.append(float(np.abs(a - b).max()))
    return {"reference_cosine_min": min(cosines), "reference_max_abs": max(diffs)}


def _track_ogg(audio_dir: Path) -> bytes:
    """A 3-minute 44.1 kHz stereo OGG Vorbis track: the real clips back to back (synthetic music without them)."""
    import io

    import soundfile as sf

    from encore.audio import decode_audio, to_encoder_input

    parts, total = [], 0
    paths = [p for p in sorted(audio_dir.glob("*")) if p.suffix != ".csv"] if audio_dir.is_dir() else []
    for path in paths:
        decoded = decode_audio(path.read_bytes(), max_seconds=None)
        parts.append(to_encoder_input(decoded.samples, decoded.sample_rate, 44_100))
        total += len(parts[-1])
        if total >= TRACK_SECONDS * 44_100:
            break
    mono = np.concatenate(parts) if parts else music_clip(44_100, 0)
    mono = np.resize(mono, int(TRACK_SECONDS * 44_100))  # repeated to 3 minutes if the clips are shorter
    stereo, buf = np.stack([mono, mono], axis=1), io.BytesIO()
    with sf.SoundFile(buf, "w", 44_100, 2, format="OGG", subtype="VORBIS") as out:
        for start in range(0, len(stereo), 1 << 15):  # libsndfile's Vorbis writer crashes on one huge block
            out.write(stereo[start : start + (1 << 15)])
    return buf.getvalue()


def _time_track(runtime: str, encoder: Any, track: bytes, repeats: int = 3) -> dict[str, Any]:
    """Seconds per stage of one whole-track encode (median of `repeats`): decode, resample, mel + patches, the
    MSD network (encode) and both networks (analyze, for the tags); also the process CPU time of the encode,
    which a loaded machine inflates much less than the wall clock."""
    from encore.audio import decode_audio, to_encoder_input

    stages: dict[str, list[float]] = {k: [] for k in ("decode", "resample", "mel", "network", "network_both")}
    cpu: list[float] = []  # process CPU time of decode + resample + mel + MSD network: what one core spends
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        decoded = decode_audio(track, max_seconds=None)
        t1 = time.perf_counter()
        mono = to_encoder_input(decoded.samples, decoded.sample_rate, encoder.sample_rate)
        t2 = time.perf_counter()
        patches = encoder.patches(mono)
        t3 = time.perf_counter()
        encoder.run(patches, "msd")
        t4 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        encoder.run(patches, "mtt")
        t5 = time.perf_counter()
        for key, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t3), strict=True):
            stages[key].append(value)
    row: dict[str, Any] = {"runtime": runtime, "track_seconds": TRACK_SECONDS}
    row |= {f"{k}_s": statistics.median(v) for k, v in stages.items()}
    row["encode_s"] = row["decode_s"] + row["resample_s"] + row["mel_s"] + row["network_s"]
    row["analyze_s"] = row["encode_s"] - row["network_s"] + row["network_both_s"]
    row["encode_cpu_s"] = statistics.median(cpu)
    row["encode_x_realtime"] = TRACK_SECONDS / row["encode_s"]
    row["encode_cpu_x_realtime"] = TRACK_SECONDS / row["encode_cpu_s"]
    row["analyze_x_realtime"] = TRACK_SECONDS / row["analyze_s"]
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in row.items()})


def track_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| runtime | decode | resample | mel | network (MSD) | encode total | x real time | encode CPU time "
        "| x real time (CPU) | + MTT tags | x real time |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['runtime']} | {r['decode_s']:.2f} | {r['resample_s']:.2f} | {r['mel_s']:.2f} | {r['network_s']:.2f} "
            f"| {r['encode_s']:.2f} | {r['encode_x_realtime']:.0f}x | {r['encode_cpu_s']:.2f} "
            f"| {r['encode_cpu_x_realtime']:.0f}x "
            f"| {r['analyze_s']:.2f} | {r['analyze_x_realtime']:.0f}x |"
        )
    return "\n".join(lines)


def _n_params(path: Path) -> int:
    """Parameter count from the safetensors header alone (no need to load GBs of weights)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())


def _front_end_seconds(encoder: Any, clip: np.ndarray) -> float:
    from encore.audio.resample import split_windows

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
    track_rows: list[dict[str, Any]] = []
    names = args.encoders.split(",")
    with tempfile.TemporaryDirectory(prefix="encore-encoders-") as tmp:
        for size in args.sizes.split(","):
            for name in (n for n in names if n != "musicnn"):  # random weights in the published shapes
                rows.extend(bench_encoder(name, size, args.clips, args.threads, Path(tmp)))
        if "musicnn" in names:  # its real weights: one size
            musicnn_rows, track_rows = bench_musicnn(args, Path(tmp))
            rows.extend(musicnn_rows)
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
    if track_rows:
        musicnn_rows = [r for r in rows if r["encoder"] == "musicnn"]
        keys = ["runtime", "seconds_per_clip", "cpu_seconds_per_clip", "front_end_seconds", "speedup_vs_torch"]
        keys += ["cosine_min"]
        _write_csv(
            args.out / "musicnn.csv", musicnn_rows, [*keys, "reference_cosine_min", "reference_max_abs", "clips"]
        )
        _write_csv(args.out / "musicnn_track.csv", track_rows, list(track_rows[0]))
        for r in musicnn_rows:
            print(
                f"musicnn {r['runtime']}: CPU {r['cpu_seconds_per_clip']:.3f} s per 10 s; "
                f"to the TF graph cosine >= {r['reference_cosine_min']:.6f}, "
                f"max abs {r['reference_max_abs']:.2e}"
            )
        print(f"3-minute track, {args.threads} thread(s), seconds (median of 3):")
        print(track_table(track_rows))
    print(f"load average before {load_before}, after {machine['loadavg_after']}; threads {args.threads}")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'audio_encoders.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
