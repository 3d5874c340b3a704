"""CPU time per training step, Encore vs FuxiCTR 2.3.10, on Frappe x1 (fp32, one thread): the quick check
behind a speed change, steadier than samples/s on a shared machine because it counts this process's CPU
(time.process_time) rather than wall time.

Run:  .venv/bin/python benchmarks/ctr_step_cpu.py --models WideDeep,NFM --fuxictr-src ../fuxictr-src \
        --fuxictr-python ../fuxictr-env/bin/python --cache-dir ../fuxictr-cache --data-dir ../shared/data/frappe/x1
Each side trains `--repeats` blocks of `--steps` batches of 4096 rows (after `--warmup` untimed ones) with
its own training step: Encore's trainer loop (training/trainer.py `_train_epoch`: batching, loss, L2 penalties,
clipping, Adam) and FuxiCTR's `train_step` (forward, loss + its regularizer, backward, clipping, Adam) fed by
benchmarks/ctr_vs_fuxictr.py's in-memory loader. Hyper-parameters come from that script's MODELS. The minimum
block is reported (the least disturbed by other processes on a shared machine), with every block's figure.
`--profile N` prints each side's top-N torch ops by self CPU time (torch.profiler), for where the time goes.
`--skip-fuxictr` times Encore alone (no FuxiCTR setup needed). `--compile` also times Encore with its training
forward pass under torch.compile (training.trainer TrainConfig.compile; compiled during the warm-up steps, so the
timed blocks hold no compilation). `--record CSV` appends one row per model (the table of docs/performance.md,
"Compiled training steps", comes from docs/results/ctr_vs_fuxictr_fp32/compile_steps.csv).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.ctr_vs_fuxictr import (  # noqa: E402
    _COMMON,
    _DRIVER,
    MODELS,
    _fuxictr_data_cfg,
    _thread_env,
)

# FuxiCTR side: the comparison driver's own setup (feature map, memory loader, model), cut where it would start
# fit(); timed train_step calls follow instead.
_MODEL_BUILT = "os.makedirs(model.model_dir"
assert _MODEL_BUILT in _DRIVER, "benchmarks/ctr_vs_fuxictr.py's driver changed: update the cut"
_STEP_DRIVER = (
    _DRIVER.split(_MODEL_BUILT)[0]
    + r"""
loader = MemoryLoader(feature_map, params["train_data"], "train", params["batch_size"], shuffle=True)
model._max_gradient_norm = params["max_gradient_norm"]  # set by fit(), which we bypass
model.train()

def batches():
    while True:
        yield from loader

it = batches()
for _ in range(cfg["warmup"]):
    model.train_step(next(it)).item()
prof = None
if cfg["profile"]:
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU])
    prof.__enter__()
blocks = []
for _ in range(cfg["repeats"]):
    c0 = time.process_time()
    for _ in range(cfg["steps"]):
        model.train_step(next(it)).item()  # train_epoch's loss.item()
    blocks.append(1000 * (time.process_time() - c0) / cfg["steps"])
if prof is not None:
    prof.__exit__(None, None, None)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=cfg["profile"]), flush=True)
json.dump({"cpu_ms": blocks}, open(cfg["result_path"], "w"))
"""
)


def fuxictr_step(model: str, args: argparse.Namespace, work: Path) -> dict:
    cfg = {
        "model": model,
        "zoo_dir": str(args.fuxictr_src / "model_zoo" / MODELS[model]["fuxictr_zoo"]) if model else None,
        "model_class": MODELS[model].get("fuxictr_class", model) if model else None,
        "hparams": dict(MODELS[model]["hparams"], seed=args.seed) if model else {**_COMMON},
        "data": {**_fuxictr_data_cfg(args.data_dir, args.cache_dir), "model_root": str(work / "checkpoints")},
        "threads": 1,
        "loader": "memory",
        "warmup": args.warmup,
        "steps": args.steps,
        "repeats": args.repeats,
        "profile": args.profile,
        "result_path": str(work / f"fuxictr_{model}.json"),
    }
    cfg_path = work / f"fuxictr_{model}_cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    driver = work / "step_driver.py"
    driver.write_text(_STEP_DRIVER)
    subprocess.run([str(args.fuxictr_python), str(driver), str(cfg_path)], env=_thread_env(1), cwd=work, check=True)
    return json.loads(Path(cfg["result_path"]).read_text()) if model else {}


def encore_step(model: str, args: argparse.Namespace, data, encoded, config: dict, compiled: bool = False) -> dict:
    import torch
    from torch import nn

    from training.cell import Cell, GridSettings
    from training.data import TensorSplit
    from training.models.registry import get_ctr_model
    from training.trainer import _train_epoch, seed_everything

    grid = GridSettings(config, threads=1, progress=False)
    cell = Cell.make(data, model, get_ctr_model(model), args.seed, grid)
    cfg = cell.train
    seed_everything(cfg.seed)
    net = cell.model_class(encoded.spec, **cell.model_options)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    tables = {id(t) for t in net.embedding_tables()}
    net_weights = [p for p in net.parameters() if id(p) not in tables]
    generator = torch.Generator().manual_seed(cfg.seed)
    train = encoded.train

    def rows(n_steps: int) -> TensorSplit:  # n_steps full batches of the training rows
        n = n_steps * cfg.batch_size
        return TensorSplit("train", {k: v[:n] for k, v in train.inputs.items()}, train.labels[:n])

    forward = torch.compile(net, dynamic=False) if compiled else net  # as training.trainer.fit compiles it

    def epoch(split: TensorSplit) -> None:
        loss_fn = nn.BCEWithLogitsLoss()
        _train_epoch(forward, net, split, optimizer, loss_fn, cfg, generator, 1, net_weights, cfg.batch_size)

    epoch(rows(args.warmup))
    timed = rows(args.steps)
    prof = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        prof = profile(activities=[ProfilerActivity.CPU])
        prof.__enter__()
    blocks = []
    for _ in range(args.repeats):
        c0 = time.process_time()
        epoch(timed)
        blocks.append(1000 * (time.process_time() - c0) / args.steps)
    if prof is not None:
        prof.__exit__(None, None, None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile), flush=True)
    return {"cpu_ms": blocks}


def _fmt(blocks: list[float]) -> str:
    return " ".join(f"{b:.1f}" for b in blocks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="WideDeep,NFM,xDeepFM", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--fuxictr-src", type=Path, default=REPO_ROOT.parent / "fuxictr-src")
    p.add_argument("--fuxictr-python", type=Path, default=REPO_ROOT.parent / "fuxictr-env" / "bin" / "python")
    p.add_argument("--cache-dir", type=Path, default=REPO_ROOT.parent / "fuxictr-cache")
    p.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "frappe" / "x1")
    p.add_argument("--steps", type=int, default=30, help="timed steps per side (Frappe x1 has 50 per epoch)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed blocks of --steps; the minimum is reported")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--profile", type=int, default=0, help="print the top N ops by self CPU time")
    p.add_argument("--skip-fuxictr", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time Encore's step with torch.compile")
    p.add_argument("--record", type=Path, default=None, help="append one row per model to this CSV")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        print(f"error: unknown model(s) {unknown}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 1
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"
    import torch

    torch.set_num_threads(1)
    from training.cell import EncodedData
    from training.datasets.registry import get_dataset
    from training.run_benchmark import load_config

    data = get_dataset("frappe").load(args.data_dir.resolve().parents[1], "all", "none")
    encoded = EncodedData.encode(data)
    config = load_config("frappe")
    with tempfile.TemporaryDirectory(prefix="ctr_step_cpu_") as tmp:
        work = Path(tmp)
        if not args.skip_fuxictr:
            args.fuxictr_src, args.data_dir = args.fuxictr_src.resolve(), args.data_dir.resolve()
            args.cache_dir = args.cache_dir.resolve()
            args.cache_dir.mkdir(parents=True, exist_ok=True)
            fuxictr_step(None, args, work)  # csv -> parquet once, untimed
        for model in models:
            load_before = Path("/proc/loadavg").read_text().split()[0]
            en = encore_step(model, args, data, encoded, config)
            ec = encore_step(model, args, data, encoded, config, compiled=True) if args.compile else None
            fx = None if args.skip_fuxictr else fuxictr_step(model, args, work)
            load = Path("/proc/loadavg").read_text().split()[0]
            e = min(en["cpu_ms"])
            line = f"{model}: Encore {e:.1f} ms CPU/step (blocks {_fmt(en['cpu_ms'])})"
            if ec is not None:
                line += f", compiled {min(ec['cpu_ms']):.1f} ms (blocks {_fmt(ec['cpu_ms'])})"
            if fx is not None:
                f = min(fx["cpu_ms"])
                line += f", FuxiCTR {f:.1f} ms (blocks {_fmt(fx['cpu_ms'])}), FuxiCTR/Encore {f / e:.2f}x"
                if ec is not None:
                    line += f", FuxiCTR/compiled {f / min(ec['cpu_ms']):.2f}x"
            print(f"{line} (load {load})", flush=True)
            if args.record is not None:
                _record(args, model, en, ec, fx, f"{load_before}-{load}")
    return 0


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _record(args: argparse.Namespace, model: str, en: dict, ec: dict | None, fx: dict | None, load: str) -> None:
    """One row per model: the minimum block of each side (ms of this process's CPU per step) and every block."""
    import torch

    row = {
        "model": model,
        "finished_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "threads": 1,
        "steps": args.steps,
        "repeats": args.repeats,
        "encore_ms": round(min(en["cpu_ms"]), 1),
        "encore_compiled_ms": round(min(ec["cpu_ms"]), 1) if ec else "",
        "fuxictr_ms": round(min(fx["cpu_ms"]), 1) if fx else "",
        "encore_blocks": _fmt(en["cpu_ms"]),
        "encore_compiled_blocks": _fmt(ec["cpu_ms"]) if ec else "",
        "fuxictr_blocks": _fmt(fx["cpu_ms"]) if fx else "",
        "load_1min": load,
    }
    new = not args.record.is_file()
    args.record.parent.mkdir(parents=True, exist_ok=True)
    with args.record.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    sys.exit(main())
