"""The ranker's forward pass, fp32 against its int8 graph, on a trained bundle: the floor the int8 option moves.

    .venv/bin/python -m training.bootstrap --size quick --epochs 2      # or any bundle with ranker/model.int8.onnx
    .venv/bin/python -m benchmarks.int8_floor artifacts/<bundle id> --rows 200 --calls 500

`benchmarks/recommend_profile.py --precision int8` times the whole request, but on its serving world, whose model
is untrained, so its int8 graph quantizes every layer. On a trained model the bundle-time check keeps the layers
that cost AUC in fp32 (`components.ranker.int8.fp32_layers` in the manifest), which gives back part of the gain:
this times both graphs of a trained bundle, one thread each, alternating call by call so that machine noise hits
both alike, and appends a row to docs/results/performance/int8_floor.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
OUT_CSV = ROOT / "docs" / "results" / "performance" / "int8_floor.csv"
FIELDS = ["bundle", "model", "rows", "calls", "fp32_layers", "auc_drop", "fp32_ms", "int8_ms", "speedup", "load_1m"]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds_for(sess: ort.InferenceSession, rows: int) -> dict[str, np.ndarray]:
    """Inputs of the graph's shapes, batch `rows`: small ids (in every vocabulary) and normal floats."""
    rng, feeds = np.random.default_rng(0), {}
    for node in sess.get_inputs():
        shape = [rows if not isinstance(d, int) else d for d in node.shape]
        if "int" in node.type:
            feeds[node.name] = rng.integers(0, 3, size=shape).astype(np.int64)
        else:
            feeds[node.name] = rng.normal(size=shape).astype(np.float32)
    return feeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="a bundle folder with ranker/model.onnx and model.int8.onnx")
    parser.add_argument("--rows", type=int, default=200, help="candidates per call")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    int8_path = args.bundle / "ranker" / "model.int8.onnx"
    if not int8_path.is_file():
        raise SystemExit(f"error: {int8_path} does not exist (the bundle-time check left it out, or an older bundle)")
    ranker = json.loads((args.bundle / "manifest.json").read_text())["components"]["ranker"]
    fp32, int8 = session(args.bundle / "ranker" / "model.onnx"), session(int8_path)
    feeds = feeds_for(fp32, args.rows)
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(args.calls):
        for name, sess in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            sess.run(None, feeds)
            times[name].append(time.perf_counter() - start)
    fp32_ms, int8_ms = (float(np.median(times[k][10:])) * 1000 for k in ("fp32", "int8"))  # first calls warm up
    row = {
        "bundle": args.bundle.name,
        "model": ranker["model"],
        "rows": args.rows,
        "calls": args.calls,
        "fp32_layers": len(ranker["int8"].get("fp32_layers", [])),
        "auc_drop": ranker["int8"]["auc_drop"],
        "fp32_ms": round(fp32_ms, 3),
        "int8_ms": round(int8_ms, 3),
        "speedup": round(fp32_ms / int8_ms, 2),
        "load_1m": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(row))
    if not args.no_write:
        new = not OUT_CSV.exists()
        OUT_CSV.parent.mkdir(parents=True, exist_ok=True)
        with OUT_CSV.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
