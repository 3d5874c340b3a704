"""Peak memory and samples/s of the streamed training path (training/streaming.py) against the in-memory one, on
Frappe-shaped data of growing size (training/datasets/frappe_synth.py).

    nice -n 15 .venv/bin/python -m benchmarks.streaming_memory --rows 2000000,5000000 --steps 100

Every (rows, mode) cell runs in a fresh process and prepares the data as run_benchmark.py does
(`EncodedData.encode`): mode `memory` reads the training split into a frame and encodes it whole; mode `stream`
fits the spec in one pass over the row groups and reads them again as it trains (`--stream`). Then DeepFM
(Frappe's BARS settings) trains `--steps` steps of `--batch-size` rows: the run is capped by steps, so a
bigger file costs the streamed path only its one counting pass. Recorded per cell: peak_rss_mb, the process's
maximum resident set (getrusage ru_maxrss) over the whole run; prepare_s, load + fit + encode; samples_per_s
over the training steps (for streaming, reading and encoding the row groups included). The data are generated
once under data/streaming/rows_<N>/ (ignored by git). Writes docs/results/streaming/streaming_memory.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "streaming"
DATA = ROOT / "data" / "streaming"
MODES = ("memory", "stream")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def measure(folder: Path, mode: str, steps: int, batch_size: int) -> dict:
    """One cell, in this process: prepare the data as run_benchmark.py does, then train `steps` steps."""
    import torch

    from training.cell import EncodedData
    from training.datasets.frappe_synth import load_frappe_synth
    from training.models.registry import get_ctr_model
    from training.run_benchmark import load_config
    from training.trainer import TrainConfig, batch_loss

    t0 = time.perf_counter()
    encoded = EncodedData.encode(load_frappe_synth(folder, stream=mode == "stream"))
    prepare_s, prepare_rss = time.perf_counter() - t0, peak_rss_mb()
    settings = load_config("frappe")["models"]["DeepFM"]
    cfg = TrainConfig(**{**load_config("frappe")["train"], **settings["train"], "batch_size": batch_size})
    torch.manual_seed(0)
    model = get_ctr_model("DeepFM")(encoded.spec, **settings["model"])
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=cfg.lr), torch.nn.BCEWithLogitsLoss()
    tables, generator = model.embedding_tables(), torch.Generator().manual_seed(0)
    net_weights = [p for p in model.parameters() if id(p) not in {id(t) for t in tables}]
    done, samples, t1 = 0, 0, time.perf_counter()
    while done < steps:
        for inputs, labels in encoded.train.batches(batch_size, generator):
            loss = batch_loss(model, tables, net_weights, inputs, labels, loss_fn, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            done, samples = done + 1, samples + len(labels)
            if done == steps:
                break
    train_s = time.perf_counter() - t1
    return {
        "mode": mode,
        "train_rows": len(encoded.train),
        "steps": steps,
        "batch_size": batch_size,
        "prepare_s": round(prepare_s, 2),
        "peak_rss_after_prepare_mb": round(prepare_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "samples_per_s": round(samples / train_s, 1),
        "threads": torch.get_num_threads(),
    }


def dataset(rows: int, chunk_rows: int) -> Path:
    """The generated data of `rows` training rows, built once (in a child process: its memory is not ours)."""
    folder = DATA / f"rows_{rows}"
    if not (folder / "test.parquet").exists():
        command = [sys.executable, "-m", "training.datasets.frappe_synth", "--rows", str(rows), "--out", str(folder)]
        subprocess.run([*command, "--chunk-rows", str(chunk_rows)], check=True, cwd=ROOT)
    return folder


def run_cell(folder: Path, mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "benchmarks.streaming_memory", "--worker", mode, "--data", str(folder)]
    command += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="2000000,5000000", help="comma list of training rows")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of memory,stream")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every cell")
    p.add_argument("--chunk-rows", type=int, default=100_000, help="rows per parquet row group of the data")
    p.add_argument("--worker", choices=MODES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.data, args.worker, args.steps, args.batch_size)))
        return 0
    rows_list = [int(r) for r in args.rows.split(",")]
    records = []
    for rows in rows_list:
        folder = dataset(rows, args.chunk_rows)
        for mode in args.modes.split(","):
            records.append({"rows": rows, **run_cell(folder, mode, args)})
            print(json.dumps(records[-1]), flush=True)
    write_csv(args.out / "streaming_memory.csv", records)
    return 0


def write_csv(path: Path, records: list[dict]) -> None:
    """Merge into the CSV: a cell measured again replaces its old row, other sizes stay (20M can run alone)."""
    new_cells = {(str(r["rows"]), r["mode"]) for r in records}
    kept = []
    if path.exists():
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if (r["rows"], r["mode"]) not in new_cells]
    rows = sorted(kept + records, key=lambda r: (int(r["rows"]), MODES.index(r["mode"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
