"""Encore vs FuxiCTR 2.3.10 on Frappe x1: same files and hyper-parameters; test AUC/logloss, training speed.

Run:  .venv/bin/python benchmarks/ctr_vs_fuxictr.py --models DeepFM,DCNv2 --fuxictr-src ../fuxictr-src \
        --fuxictr-python ../fuxictr-env/bin/python
FuxiCTR lives outside this repo (never vendored): git clone https://github.com/reczoo/FuxiCTR ../fuxictr-src \
&& git -C ../fuxictr-src checkout 0245987; python3.11 -m venv ../fuxictr-env \
&& ../fuxictr-env/bin/pip install torch==2.13.0 fuxictr==2.3.10 "polars<2"
The repository has no v2.3.10 tag: 5c42ceb bumps fuxictr/version.py to 2.3.10 and 0245987 (main) is the newest
commit at that version; the model_zoo code of every model here is the same in both (later commits only add
docstrings, line endings and a new model). Models (all 15 of Encore's CTR models): --models
LR,FM,FFM,AFM,WideDeep,NFM,DCN,MaskNet,DeepFM,DCNv2,xDeepFM,FiGNN,FinalMLP,EulerNet,WuKong.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURES = "user item daytime weekday isweekend homework cost weather country city".split()
FUXICTR_VERSION = "2.3.10"

# BARS Frappe_x1 training protocol (ranking/ctr/*/*_frappe_x1 logs in reczoo/BARS), shared by every model.
_COMMON: dict[str, Any] = {
    "embedding_dim": 10,
    "batch_size": 4096,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "loss": "binary_crossentropy",
    "epochs": 100,
    "early_stop_patience": 2,
    "reduce_lr_on_plateau": True,  # lr x0.1 on every non-improving epoch
    "monitor": "AUC",
    "monitor_mode": "max",
    "metrics": ["AUC", "logloss"],
    "max_gradient_norm": 10.0,
    "seed": 2021,
    "shuffle": True,
    "min_categr_count": 1,
    "embedding_regularizer": 0.05,
    "net_regularizer": 0,
    "batch_norm": True,
}
# The training protocol alone, for models whose BARS runs had no batch norm or another regularizer.
_PROTOCOL: dict[str, Any] = {k: v for k, v in _COMMON.items() if k not in ("embedding_regularizer", "batch_norm")}

# LR, FM and FFM take one `regularizer` that FuxiCTR applies to embeddings and the rest alike; the rest is
# only their global bias, so it maps onto Encore's embedding_l2 (whole tables, same lambda/2 * ||W||^2).
_PROTOCOL_ONE_REG: dict[str, Any] = {k: v for k, v in _PROTOCOL.items() if k != "net_regularizer"}

# The one place hyper-parameters live; both sides get exactly these. Adding a model = one entry
# ("fuxictr_zoo": its folder under the checkout's model_zoo/, "hparams": BARS's tuned Frappe_x1 values).
MODELS: dict[str, dict[str, Any]] = {
    "DeepFM": {
        "fuxictr_zoo": "DeepFM/DeepFM_torch",
        "hparams": {
            **_COMMON,
            "hidden_units": [400, 400, 400],
            "hidden_activations": "relu",
            "net_dropout": 0.2,
        },
    },
    # BARS Frappe_x1 logs (FuxiCTR 1.x) for LR ... MaskNet; the values are Encore's training/configs/frappe.json.
    "LR": {
        "fuxictr_zoo": "LR",
        "hparams": {k: v for k, v in _PROTOCOL_ONE_REG.items() if k != "embedding_dim"} | {"regularizer": 1e-5},
    },
    "FM": {"fuxictr_zoo": "FM", "hparams": {**_PROTOCOL_ONE_REG, "regularizer": 5e-6}},
    # Encore's FFM keeps one (F-1)*D-wide table per field: FuxiCTR's FFMv2 layout. FFM (F-1 tables of D) is
    # the same function, init and penalty, split over F-1 tables.
    "FFM": {"fuxictr_zoo": "FFM", "fuxictr_class": "FFMv2", "hparams": {**_PROTOCOL_ONE_REG, "regularizer": 1e-6}},
    "AFM": {
        "fuxictr_zoo": "AFM",
        "hparams": {
            **_PROTOCOL,
            "embedding_regularizer": 1e-5,
            "attention_dim": 128,
            "attention_dropout": [0.1, 0.1],
            "use_attention": True,
        },
    },
    "WideDeep": {
        "fuxictr_zoo": "WideDeep/WideDeep_torch",
        "hparams": {
            **_COMMON,
            "embedding_regularizer": 0.1,
            "hidden_units": [400, 400, 400],
            "hidden_activations": "relu",
            "net_dropout": 0.6,
        },
    },
    "NFM": {
        "fuxictr_zoo": "NFM",
        "hparams": {
            **_PROTOCOL,
            "epochs": 200,
            "embedding_regularizer": 1e-4,
            "hidden_units": [400, 400, 400],
            "hidden_activations": "relu",
            "net_dropout": 0.4,
            "batch_norm": False,
        },
    },
    "DCN": {
        "fuxictr_zoo": "DCN/DCN_torch",
        "hparams": {
            **_COMMON,
            "num_cross_layers": 3,
            "dnn_hidden_units": [400, 400, 400],
            "dnn_activations": "relu",
            "net_dropout": 0.2,
        },
    },
    "MaskNet": {
        "fuxictr_zoo": "MaskNet",
        "hparams": {
            **_PROTOCOL,
            "embedding_regularizer": 0.1,
            "model_type": "ParallelMaskNet",
            "dnn_hidden_units": [400, 400, 400],
            "dnn_hidden_activations": "relu",
            "parallel_num_blocks": 3,
            "parallel_block_dim": 50,
            "reduction_ratio": 2,
            "net_dropout": 0.1,
            "emb_layernorm": False,
            "net_layernorm": True,
        },
    },
    "DCNv2": {
        "fuxictr_zoo": "DCNv2",
        "hparams": {
            **_COMMON,
            "model_structure": "parallel",
            "use_low_rank_mixture": False,
            "num_cross_layers": 4,
            "parallel_dnn_hidden_units": [400, 400, 400],
            "stacked_dnn_hidden_units": [],
            "dnn_activations": "relu",
            "net_dropout": 0.4,
        },
    },
    "xDeepFM": {
        "fuxictr_zoo": "xDeepFM",
        "hparams": {
            **_COMMON,
            "embedding_regularizer": 0.1,
            "cin_hidden_units": [64],
            "dnn_hidden_units": [400, 400, 400],
            "dnn_activations": "relu",
            "net_dropout": 0.2,
        },
    },
    "FiGNN": {
        "fuxictr_zoo": "FiGNN",
        "hparams": {
            **_PROTOCOL,
            "embedding_regularizer": 0.001,
            "gnn_layers": 17,
            "use_residual": True,
            "use_gru": False,
            "reuse_graph_layer": False,
        },
    },
    "FinalMLP": {
        "fuxictr_zoo": "FinalMLP",
        "hparams": {
            **_PROTOCOL,
            "embedding_regularizer": 0.05,
            "mlp1_hidden_units": [400],
            "mlp1_hidden_activations": "relu",
            "mlp1_dropout": 0.4,
            "mlp1_batch_norm": True,
            "mlp2_hidden_units": [100],
            "mlp2_hidden_activations": "relu",
            "mlp2_dropout": 0.4,
            "mlp2_batch_norm": True,
            "use_fs": True,
            "fs_hidden_units": [400],
            "fs1_context": ["user"],
            "fs2_context": ["item"],
            "num_heads": 5,
        },
    },
    # No BARS entry: the EulerNet authors' FuxiCTR Frappe_x1 log (github.com/Ethan-TZ/EulerNet, #Code4FuxiCTR#).
    "EulerNet": {
        "fuxictr_zoo": "EulerNet",
        "hparams": {
            **_PROTOCOL,
            "embedding_regularizer": 0.05,
            "net_regularizer": 1e-5,
            "shape": [52],
            "net_ex_dropout": 0.0,
            "net_im_dropout": 0.0,
            "layer_norm": True,
        },
    },
    # No published Frappe result. FuxiCTR's WuKong_default (dim 64, 40+40 rows, [512, 256] MLPs, batch 10000)
    # costs ~40 GFLOP per 10k-row step: hours per run on 2 CPU cores. This CPU-sized WuKong keeps its structure
    # (3 layers, rank-8 FMB, layer norm, BN head) at Frappe's usual width and L2; both sides get exactly it.
    "WuKong": {
        "fuxictr_zoo": "WuKong",
        "hparams": {
            **_PROTOCOL,
            "embedding_dim": 16,
            "embedding_regularizer": 0.05,
            "num_wukong_layers": 3,
            "lcb_features": 16,
            "fmb_features": 16,
            "fmb_mlp_units": [128, 64],
            "fmb_mlp_activations": "relu",
            "fmp_rank_k": 8,
            "mlp_hidden_units": [256, 128],
            "mlp_hidden_activations": "relu",
            "mlp_batch_norm": True,
            "layer_norm": True,
            "net_dropout": 0,
        },
    },
}

# Executed with the FuxiCTR interpreter (never imported here): builds FuxiCTR's feature map, loaders and
# model-zoo model exactly as its run_expid.py does, and times train_epoch minus the validation inside it.
_DRIVER = r"""
import importlib.util, json, logging, os, sys, time
cfg = json.load(open(sys.argv[1]))
import torch
torch.set_num_threads(cfg["threads"])
import fuxictr
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.torch_utils import seed_everything

logging.basicConfig(level=logging.WARNING, format="[fuxictr] %(message)s")
for name in ("ray", "ray.data"):  # Ray Data logs every dataset execution at INFO
    logging.getLogger(name).setLevel(logging.WARNING)
tag = "[fuxictr " + (cfg["model"] or "preprocess") + "]"

def cpu_ticks():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return f[7], sum(f)  # steal, total (user..steal)

params = dict(cfg["hparams"])
params.update(cfg["data"])


# --fuxictr-loader memory, through FuxiCTR's `data_loader` hook: the parquet columns held as tensors and
# shuffled batches by index, like the Ray loader's global shuffle (seeded here, which Ray's is not) but
# without Ray's worker processes, which on an overloaded 2-core machine crowded out the training itself.
class MemoryLoader:

    def __init__(self, feature_map, data_path, split="train", batch_size=32, shuffle=False, **kwargs):
        import pyarrow.parquet as pq
        cols = list(feature_map.features.keys()) + feature_map.labels
        table = pq.read_table(data_path, columns=cols)
        self.data = {c: torch.from_numpy(table.column(c).to_numpy()) for c in cols}
        self.num_samples, self.num_blocks = table.num_rows, 1
        self.batch_size, self.shuffle = batch_size, shuffle and split == "train"

    def __len__(self):
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = torch.randperm(self.num_samples) if self.shuffle else None
        for start in range(0, self.num_samples, self.batch_size):
            end = start + self.batch_size
            rows = order[start:end] if order is not None else slice(start, end)
            yield {c: t[rows] for c, t in self.data.items()}


if cfg.get("loader") == "memory":
    params["data_loader"] = MemoryLoader
# Preprocessing (csv -> parquet + feature_map.json) is cached under data_root and skipped when present;
# the parent has already run it once with model=None, so it never lands inside a timed run.
encoder = FeatureProcessor(**params)
params["train_data"], params["valid_data"], params["test_data"] = build_dataset(encoder, **params)
params["data_format"] = "parquet"
if cfg["model"] is None:
    print(tag, "preprocessing done:", params["train_data"], flush=True)
    sys.exit(0)

seed_everything(seed=params["seed"])
feature_map = FeatureMap(params["dataset_id"], encoder.data_dir)
feature_map.load(os.path.join(encoder.data_dir, "feature_map.json"), params)
spec = importlib.util.spec_from_file_location(
    "fuxictr_zoo_src", os.path.join(cfg["zoo_dir"], "src", "__init__.py"),
    submodule_search_locations=[os.path.join(cfg["zoo_dir"], "src")])
zoo = importlib.util.module_from_spec(spec)
sys.modules["fuxictr_zoo_src"] = zoo
spec.loader.exec_module(zoo)
model = getattr(zoo, cfg["model_class"])(feature_map, gpu=-1, model_id=cfg["model"], **params)
os.makedirs(model.model_dir, exist_ok=True)  # run_expid.py gets this from set_logger()
train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
test_gen = RankDataLoader(feature_map, stage="test", **params)

epochs, eval_s, last_val = [], [0.0], [{}]
orig_train_epoch, orig_eval_step, orig_evaluate = model.train_epoch, model.eval_step, model.evaluate

def timed_evaluate(gen, metrics=None):
    last_val[0] = orig_evaluate(gen, metrics)
    return last_val[0]

def timed_eval_step():
    t = time.perf_counter()
    orig_eval_step()  # validation + checkpoint save + lr decay: not training throughput
    eval_s[0] += time.perf_counter() - t

def timed_train_epoch(gen):
    eval_s[0] = 0.0
    s0, t0 = cpu_ticks()
    w0 = time.perf_counter()
    orig_train_epoch(gen)
    wall = time.perf_counter() - w0
    s1, t1 = cpu_ticks()
    rec = {"epoch": len(epochs) + 1, "train_s": wall - eval_s[0], "eval_s": eval_s[0],
           "steal_pct": 100.0 * (s1 - s0) / max(t1 - t0, 1),
           "valid_auc": last_val[0].get("AUC"), "lr": model.optimizer.param_groups[0]["lr"]}
    epochs.append(rec)
    print(f"{tag} epoch {rec['epoch']}: train {rec['train_s']:.1f}s "
          f"({train_gen.num_samples / rec['train_s']:.0f} samples/s), valid AUC {rec['valid_auc']:.6f}, "
          f"steal {rec['steal_pct']:.1f}%", flush=True)

model.train_epoch, model.eval_step, model.evaluate = timed_train_epoch, timed_eval_step, timed_evaluate
model.fit(train_gen, validation_data=valid_gen, **params)  # reloads the best checkpoint at the end
valid = orig_evaluate(valid_gen)
test = orig_evaluate(test_gen)
aucs = [e["valid_auc"] for e in epochs]
result = {"fuxictr_version": fuxictr.__version__, "torch_version": torch.__version__,
          "threads": torch.get_num_threads(), "train_samples": train_gen.num_samples, "epochs": epochs,
          "best_epoch": aucs.index(max(aucs)) + 1, "valid": valid, "test": test,
          "num_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
json.dump(result, open(cfg["result_path"], "w"))
"""


class BenchmarkError(Exception):
    """A bad input or a failed run: reported as one line, exit status 1."""


def _cpu_ticks() -> tuple[int, int, int]:
    """(steal, busy, total) jiffies over all CPUs; busy = user+nice+system+irq+softirq."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return f[7], f[0] + f[1] + f[2] + f[5] + f[6], sum(f)


def _tree_ticks(root: int) -> dict[int, int]:
    """utime+stime jiffies of `root` and every descendant (Ray's raylet and workers included)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        rest = raw[raw.rindex(")") + 2 :].split()  # fields after "pid (comm) "
        children[int(rest[1])].append(int(entry))
        ticks[int(entry)] = int(rest[11]) + int(rest[12])
    out, stack = {}, [root]
    while stack:
        pid = stack.pop()
        if pid in ticks:
            out[pid] = ticks[pid]
        stack += children.get(pid, [])
    return out


class RunSampler:
    """Samples /proc in the background while one side runs: steal, and CPU that other processes took.

    Others' CPU is the contention signal on a shared box: busy time of all CPUs minus what the run's
    own process tree used. Steal per epoch comes from here only for Encore, whose epochs we cannot hook.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.samples: list[tuple[float, int, int, int]] = []
        self.loads: list[float] = []  # 1-minute load average, one per sample
        self.root: int | None = None
        self._own: dict[int, int] = {}  # pid -> last seen ticks (a process that exits keeps its count)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        if self.root is not None:
            self._own.update(_tree_ticks(self.root))
        self.samples.append((time.monotonic(), *_cpu_ticks()))
        self.loads.append(float(Path("/proc/loadavg").read_text().split()[0]))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> RunSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def load_median(self) -> float:
        """Median 1-minute load average over the run (2 cores: above 2 means runnable work waited)."""
        return statistics.median(self.loads) if self.loads else float("nan")

    def others_cpu_pct(self) -> float:
        """Share of all CPU time (percent) used by processes outside this run."""
        if len(self.samples) < 2:
            return float("nan")
        (_, _, b0, t0), (_, _, b1, t1) = self.samples[0], self.samples[-1]
        own = sum(self._own.values())
        return max(0.0, 100.0 * (b1 - b0 - own) / max(t1 - t0, 1))

    def median_steal_over_windows(self, n_windows: int) -> float:
        """Median steal % over n equal time windows of the sampled interval (one per epoch)."""
        if len(self.samples) < 2:
            return float("nan")
        n = max(n_windows, 1)
        start, end = self.samples[0][0], self.samples[-1][0]
        edges = [start + (end - start) * i / n for i in range(n + 1)]
        pct = []
        for lo, hi in zip(edges, edges[1:], strict=False):
            a = min(self.samples, key=lambda s: abs(s[0] - lo))
            b = min(self.samples, key=lambda s: abs(s[0] - hi))
            if b[3] > a[3]:
                pct.append(100.0 * (b[1] - a[1]) / (b[3] - a[3]))
        return statistics.median(pct) if pct else float("nan")


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        RAY_USAGE_STATS_ENABLED="0",  # FuxiCTR's RankDataLoader starts Ray; no telemetry calls
        PYTHONUNBUFFERED="1",
    )
    return env


def _dataset_id(data_dir: Path) -> str:
    # Cache key for FuxiCTR's parquet/feature_map: changes whenever the csv files change.
    h = hashlib.sha1()
    for split in ("train", "valid", "test"):
        st = (data_dir / f"{split}.csv").stat()
        h.update(f"{split}:{st.st_size}:{st.st_mtime_ns}".encode())
    return "frappe_x1_" + h.hexdigest()[:8]


def _fuxictr_data_cfg(data_dir: Path, cache_dir: Path) -> dict[str, Any]:
    # BARS's dataset_config.yaml for frappe_x1_04e961e9, pointed at our files.
    return {
        "dataset_id": _dataset_id(data_dir),
        "data_root": str(cache_dir),
        "data_format": "csv",
        "train_data": str(data_dir / "train.csv"),
        "valid_data": str(data_dir / "valid.csv"),
        "test_data": str(data_dir / "test.csv"),
        "feature_cols": [{"active": True, "dtype": "float", "name": FEATURES, "type": "categorical"}],
        "label_col": {"dtype": "float", "name": "label"},
        "task": "binary_classification",
        "verbose": 0,
    }


def run_fuxictr(model: str | None, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Runs the driver once; model=None only builds FuxiCTR's parquet cache (excluded from timing)."""
    cfg = {
        "model": model,
        "zoo_dir": str(args.fuxictr_src / "model_zoo" / MODELS[model]["fuxictr_zoo"]) if model else None,
        "model_class": args.fuxictr_class.get(model, MODELS[model].get("fuxictr_class", model)) if model else None,
        "hparams": _hparams(model, args) if model else {**_COMMON},
        "data": {**_fuxictr_data_cfg(args.data_dir, args.cache_dir), "model_root": str(work / "checkpoints")},
        "threads": args.threads,
        "loader": args.fuxictr_loader,
        "result_path": str(work / f"fuxictr_{model}.json"),
    }
    cfg_path = work / f"fuxictr_{model}_cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    driver = work / "fuxictr_driver.py"
    driver.write_text(_DRIVER)
    cmd = [*args.nice, str(args.fuxictr_python), str(driver), str(cfg_path)]
    print(f"[bench] FuxiCTR {model or 'preprocess'}: {' '.join(cmd)}", flush=True)
    with RunSampler() as sampler:
        proc = subprocess.Popen(cmd, env=_thread_env(args.threads), cwd=work)
        sampler.root = proc.pid
        rc = proc.wait()
    if rc != 0:
        raise BenchmarkError(f"FuxiCTR {model or 'preprocessing'} failed with exit code {rc}")
    if model is None:
        return {}
    return {
        **json.loads(Path(cfg["result_path"]).read_text()),
        "others_cpu_pct": sampler.others_cpu_pct(),
        "load_median": sampler.load_median(),
    }


# Where Encore's training/configs/<dataset>.json keeps each MODELS key: (section, key, value transform).
# Encore reads its own config file (run_benchmark.py takes no hyper-parameter file), so we check it
# against MODELS before running and refuse to compare on a mismatch.
_ENCORE_KEYS: dict[str, tuple[str, str, Any]] = {
    "learning_rate": ("train", "lr", None),
    "batch_size": ("train", "batch_size", None),
    "epochs": ("train", "epochs", None),
    "early_stop_patience": ("train", "patience", None),
    "reduce_lr_on_plateau": ("train", "lr_decay", lambda on: 0.1 if on else 1.0),
    "max_gradient_norm": ("train", "clip_norm", None),
    "embedding_regularizer": ("train", "embedding_l2", None),
    "net_regularizer": ("train", "net_l2", None),
    "embedding_dim": ("model", "embedding_dim", None),
    "hidden_units": ("model", "hidden_units", None),
    "parallel_dnn_hidden_units": ("model", "hidden_units", None),
    "hidden_activations": ("model", "activation", None),
    "dnn_activations": ("model", "activation", None),
    "net_dropout": ("model", "dropout", None),
    "batch_norm": ("model", "batch_norm", None),
    "model_structure": ("model", "structure", None),
    "num_cross_layers": ("model", "num_cross_layers", None),
    # xDeepFM
    "cin_hidden_units": ("model", "cin_hidden_units", None),
    "dnn_hidden_units": ("model", "hidden_units", None),
    # FiGNN
    "gnn_layers": ("model", "gnn_layers", None),
    "use_residual": ("model", "use_residual", None),
    "use_gru": ("model", "use_gru", None),
    "reuse_graph_layer": ("model", "reuse_graph_layer", None),
    # FinalMLP
    "mlp1_hidden_units": ("model", "mlp1_hidden_units", None),
    "mlp1_hidden_activations": ("model", "mlp1_activation", None),
    "mlp1_dropout": ("model", "mlp1_dropout", None),
    "mlp1_batch_norm": ("model", "mlp1_batch_norm", None),
    "mlp2_hidden_units": ("model", "mlp2_hidden_units", None),
    "mlp2_hidden_activations": ("model", "mlp2_activation", None),
    "mlp2_dropout": ("model", "mlp2_dropout", None),
    "mlp2_batch_norm": ("model", "mlp2_batch_norm", None),
    "use_fs": ("model", "use_fs", None),
    "fs_hidden_units": ("model", "fs_hidden_units", None),
    "fs1_context": ("model", "fs1_context", None),
    "fs2_context": ("model", "fs2_context", None),
    "num_heads": ("model", "num_heads", None),
    # EulerNet
    "shape": ("model", "shape", None),
    "net_ex_dropout": ("model", "net_ex_dropout", None),
    "net_im_dropout": ("model", "net_im_dropout", None),
    "layer_norm": ("model", "layer_norm", None),
    # LR, FM, FFM
    "regularizer": ("train", "embedding_l2", None),
    # AFM
    "attention_dim": ("model", "attention_dim", None),
    "attention_dropout": ("model", "attention_dropout", None),
    "use_attention": ("model", "use_attention", None),
    # MaskNet
    "model_type": ("model", "model_type", lambda t: {"ParallelMaskNet": "parallel", "SerialMaskNet": "serial"}[t]),
    "dnn_hidden_activations": ("model", "activation", None),
    "parallel_num_blocks": ("model", "num_blocks", None),
    "parallel_block_dim": ("model", "block_dim", None),
    "reduction_ratio": ("model", "reduction_ratio", None),
    "emb_layernorm": ("model", "emb_layernorm", None),
    "net_layernorm": ("model", "net_layernorm", None),
    # WuKong
    "num_wukong_layers": ("model", "num_layers", None),
    "lcb_features": ("model", "lcb_features", None),
    "fmb_features": ("model", "fmb_features", None),
    "fmb_mlp_units": ("model", "fmb_hidden_units", None),
    "fmb_mlp_activations": ("model", "fmb_activation", None),
    "fmp_rank_k": ("model", "fmb_rank", None),
    "mlp_hidden_units": ("model", "hidden_units", None),
    "mlp_hidden_activations": ("model", "activation", None),
    "mlp_batch_norm": ("model", "batch_norm", None),
}


def check_encore_hparams(model: str, dataset: str = "frappe") -> list[str]:
    """Raises on a value that differs; returns the MODELS keys Encore's config leaves to code defaults."""
    path = REPO_ROOT / "training" / "configs" / f"{dataset}.json"
    config = json.loads(path.read_text()) if path.exists() else {"train": {}, "models": {}}
    entry = config.get("models", {}).get(model)
    if entry is None:  # Encore would silently fall back to its model defaults (e.g. embedding_dim 40)
        raise BenchmarkError(f"Encore's {path.relative_to(REPO_ROOT)} has no entry for {model}")
    effective = {"train": {**config.get("train", {}), **entry.get("train", {})}, "model": entry.get("model", {})}
    unverified, mismatched = [], []
    for key, value in MODELS[model]["hparams"].items():
        if key not in _ENCORE_KEYS:
            continue  # optimizer, loss, monitor, shuffle...: fixed in Encore's trainer, not configurable
        section, name, transform = _ENCORE_KEYS[key]
        expected = transform(value) if transform else value
        if name not in effective[section]:
            unverified.append(f"{key}={value}")
            continue
        got = effective[section][name]
        same = got == expected or (isinstance(got, str) and str(expected).lower() == got.lower())
        if not same:
            mismatched.append(f"{key}={expected!r} but {section}.{name}={got!r}")
    if mismatched:
        raise BenchmarkError(
            f"Encore's {path.relative_to(REPO_ROOT)} differs from MODELS[{model!r}]: " + "; ".join(mismatched)
        )
    return unverified


def run_encore(model: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Runs Encore's training/run_benchmark.py; returns its test row plus steal and per-epoch speed."""
    script = REPO_ROOT / "training" / "run_benchmark.py"
    if not script.exists():
        return {"error": f"{script.relative_to(REPO_ROOT)} does not exist yet"}
    unverified = check_encore_hparams(model)
    out_dir = args.encore_results or work / f"encore_{model}"
    cmd = [
        *args.nice,
        str(args.encore_python),
        str(script),
        "--dataset",
        "frappe",
        "--models",
        model,
        "--seeds",
        str(args.seed),
        "--out",
        str(out_dir),
        "--threads",
        str(args.threads),
        "--precision",
        args.encore_precision,
        "--data-root",
        str(args.data_dir.parents[1]),
    ]
    helptext = _encore_help(args)
    if args.max_epochs is not None:
        cmd += ["--epochs", str(args.max_epochs)]
    if "--no-progress" in helptext:  # tqdm's carriage returns make unreadable piped logs
        cmd.append("--no-progress")
    reused = _reusable_encore_run(out_dir, model, args) if args.encore_results else None
    if reused is not None:
        print(f"[bench] Encore {model}: reusing {reused} (same seed, threads, precision); not retrained", flush=True)
        return _encore_result(out_dir, model, args, unverified, None, reused=True)
    print(f"[bench] Encore {model}: {' '.join(cmd)}", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with RunSampler() as sampler:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=_thread_env(args.threads),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        sampler.root = proc.pid
        assert proc.stdout is not None
        for line in proc.stdout:  # echo live, keep the tail for the error report
            print(f"[encore {model}] {line}", end="", flush=True)
            tail.append(line.rstrip())
        rc = proc.wait()
    if rc != 0:
        return {"error": f"exit code {rc}: " + " | ".join(tail)}
    return _encore_result(out_dir, model, args, unverified, sampler, reused=False)


def _reusable_encore_run(out_dir: Path, model: str, args: argparse.Namespace) -> Path | None:
    """The run folder of an Encore cell already in --encore-results, if it matches this comparison.

    A cell trained with other threads, precision or epoch cap is refused rather than silently reused.
    """
    csv_path = out_dir / "results.csv"
    if not csv_path.is_file():
        return None
    test = _read_encore_rows(csv_path, model, args.seed).get("test")
    if test is None or not test.get("run_dir"):
        return None
    run_dir = Path(test["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    want = {
        "threads": args.threads,
        "precision": args.encore_precision,
        "epochs": args.max_epochs if args.max_epochs is not None else MODELS[model]["hparams"]["epochs"],
    }
    got = {
        "threads": manifest.get("threads"),
        "precision": manifest["train_config"].get("precision", "fp32"),
        "epochs": manifest["train_config"]["epochs"],
    }
    if got != want:
        raise BenchmarkError(
            f"{run_dir} was trained with {got}, this comparison needs {want}; use another --encore-results"
        )
    return run_dir


def _encore_result(
    out_dir: Path,
    model: str,
    args: argparse.Namespace,
    unverified: list[str],
    sampler: RunSampler | None,
    reused: bool,
) -> dict[str, Any]:
    rows = _read_encore_rows(out_dir / "results.csv", model, args.seed)
    test = rows.get("test")
    if test is None:
        return {"error": f"no test row for model={model} seed={args.seed} in {out_dir / 'results.csv'}"}
    epochs = int(float(test["epochs"]))
    steal = test.get("steal_pct_median") or test.get("steal_pct")
    return {
        "test": {"AUC": float(test["auc"]), "logloss": float(test["logloss"])},
        "valid_auc": float(rows["valid"]["auc"]) if "valid" in rows else float("nan"),
        "epochs": epochs,
        "best_epoch": int(float(test["best_epoch"])),
        "train_seconds": float(test["train_seconds"]),
        "samples_per_s": float(test["train_samples_per_s"]),
        "epoch_samples_per_s": _encore_epoch_speed(test.get("run_dir")),
        # Encore's own per-epoch median if it reports one, else the median over `epochs` equal
        # windows of its whole run (sampled here).
        "steal_pct": float(steal)
        if steal
        else (sampler.median_steal_over_windows(epochs) if sampler is not None else float("nan")),
        "steal_source": "encore" if steal else "windows",
        "others_cpu_pct": sampler.others_cpu_pct() if sampler is not None else float("nan"),
        "load_median": sampler.load_median() if sampler is not None else float("nan"),
        "unverified": unverified,
        "reused": reused,
    }


def _encore_help(args: argparse.Namespace) -> str:
    return subprocess.run(
        [str(args.encore_python), "training/run_benchmark.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout


def _encore_epoch_speed(run_dir: str | None) -> float | None:
    """Median per-epoch samples/s from the run manifest's history, when Encore leaves one."""
    manifest = Path(run_dir) / "manifest.json" if run_dir else None
    if manifest is None or not manifest.is_file():
        return None
    m = json.loads(manifest.read_text())
    n = m.get("train_samples_per_s", 0) * m.get("train_seconds", 0) / max(m.get("epochs_run", 1), 1)
    speeds = [n / e["train_seconds"] for e in m.get("history", []) if e.get("train_seconds")]
    return statistics.median(speeds) if speeds else None


def _read_encore_rows(path: Path, model: str, seed: int) -> dict[str, dict[str, str]]:
    required = {
        "dataset",
        "model",
        "seed",
        "split",
        "auc",
        "logloss",
        "best_epoch",
        "epochs",
        "train_seconds",
        "train_samples_per_s",
    }
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise BenchmarkError(f"{path} lacks columns {sorted(missing)}")
        return {
            r["split"]: r
            for r in reader
            if r["model"] == model and r["dataset"] == "frappe" and int(float(r["seed"])) == seed
        }


def _hparams(model: str, args: argparse.Namespace) -> dict[str, Any]:
    hp = dict(MODELS[model]["hparams"], seed=args.seed)
    if args.max_epochs is not None:  # smoke runs only; results are then flagged in the table
        hp["epochs"] = args.max_epochs
    return hp


def _row(model: str, fx: dict[str, Any], en: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    train_s = sum(e["train_s"] for e in fx["epochs"])
    fx_sps = fx["train_samples"] * len(fx["epochs"]) / train_s
    row: dict[str, Any] = {
        "model": model,
        "seed": args.seed,
        "threads": args.threads,
        "encore_precision": args.encore_precision,
        "fuxictr_loader": args.fuxictr_loader,
        "fuxictr_class": args.fuxictr_class.get(model, MODELS[model].get("fuxictr_class", model)),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "max_epochs": args.max_epochs if args.max_epochs is not None else MODELS[model]["hparams"]["epochs"],
        "fuxictr_version": fx["fuxictr_version"],
        "fuxictr_src_commit": _git_describe(args.fuxictr_src),
        "fuxictr_test_auc": round(fx["test"]["AUC"], 6),
        "fuxictr_test_logloss": round(fx["test"]["logloss"], 6),
        "fuxictr_valid_auc": round(fx["valid"]["AUC"], 6),
        "fuxictr_epochs": len(fx["epochs"]),
        "fuxictr_best_epoch": fx["best_epoch"],
        "fuxictr_train_s": round(train_s, 2),
        "fuxictr_samples_per_s": round(fx_sps, 1),
        # Median epoch: FuxiCTR's first epoch also pays for Ray's worker start-up and first shuffle.
        "fuxictr_epoch_samples_per_s_median": round(
            statistics.median(fx["train_samples"] / e["train_s"] for e in fx["epochs"]), 1
        ),
        "fuxictr_steal_pct_median": round(statistics.median(e["steal_pct"] for e in fx["epochs"]), 2),
        "fuxictr_others_cpu_pct": round(fx["others_cpu_pct"], 1),
        "fuxictr_load_median": round(fx["load_median"], 2),
    }
    if "error" in en:
        row["encore_error"] = en["error"]
        return row
    row.update(
        encore_test_auc=round(en["test"]["AUC"], 6),
        encore_test_logloss=round(en["test"]["logloss"], 6),
        encore_valid_auc=round(en["valid_auc"], 6),
        encore_epochs=en["epochs"],
        encore_best_epoch=en["best_epoch"],
        encore_train_s=round(en["train_seconds"], 2),
        encore_samples_per_s=round(en["samples_per_s"], 1),
        encore_steal_pct_median=round(en["steal_pct"], 2),
        encore_steal_source=en["steal_source"],
        encore_others_cpu_pct=round(en["others_cpu_pct"], 1),
        encore_load_median=round(en["load_median"], 2),
        auc_diff=round(en["test"]["AUC"] - fx["test"]["AUC"], 6),
        throughput_ratio=round(en["samples_per_s"] / fx_sps, 3),
    )
    if en["epoch_samples_per_s"] is not None:
        row["encore_epoch_samples_per_s_median"] = round(en["epoch_samples_per_s"], 1)
        row["epoch_throughput_ratio"] = round(en["epoch_samples_per_s"] / row["fuxictr_epoch_samples_per_s_median"], 3)
    row["encore_hparams_unverified"] = " ".join(en["unverified"])
    row["encore_reused"] = en["reused"]
    row["auc_ok"] = abs(row["auc_diff"]) <= 0.001
    row["speed_ok"] = row["throughput_ratio"] >= 2.0
    return row


def _git_describe(src: Path) -> str:
    """Which model_zoo the numbers came from (tag, else commit)."""
    proc = subprocess.run(
        ["git", "-C", str(src), "describe", "--tags", "--always", "--dirty"], capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV, atomically; the columns are every key in first-seen order (rows may differ in keys)."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(path, buf.getvalue())


def write_results(rows: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "results.csv", rows)

    lines = [
        "# Encore vs FuxiCTR 2.3.10 on Frappe x1",
        "",
        f"FuxiCTR {rows[0]['fuxictr_version']} (model_zoo at {rows[0]['fuxictr_src_commit']}). "
        f"Seed {args.seed}, {args.threads} threads each, Encore precision {args.encore_precision} (FuxiCTR fp32), "
        "identical BARS hyper-parameters (`MODELS` in "
        "benchmarks/ctr_vs_fuxictr.py). Throughput = training samples / seconds in the training loop "
        "(validation excluded). Steal = median CPU steal % per epoch from /proc/stat. "
        "Others = % of all CPU time used by processes outside the run (contention on a shared box). "
        f"Goal: |AUC diff| <= 0.001 and Encore/FuxiCTR throughput >= 2x.{_smoke_note(args)}",
        "",
        "| model | FuxiCTR AUC | Encore AUC | AUC diff | FuxiCTR logloss | Encore logloss | epochs F/E "
        "| FuxiCTR samples/s | Encore samples/s | ratio E/F | steal % F/E | others % F/E |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['fuxictr_test_auc']:.6f} | {_f(r, 'encore_test_auc', 6)} | "
            f"{_f(r, 'auc_diff', 6, signed=True)} | {r['fuxictr_test_logloss']:.6f} | "
            f"{_f(r, 'encore_test_logloss', 6)} | {r['fuxictr_epochs']}/{r.get('encore_epochs', '-')} | "
            f"{r['fuxictr_samples_per_s']:.0f} | {_f(r, 'encore_samples_per_s', 0)} | "
            f"{_f(r, 'throughput_ratio', 2)} | {r['fuxictr_steal_pct_median']:.1f}/"
            f"{_f(r, 'encore_steal_pct_median', 1)} | {r['fuxictr_others_cpu_pct']:.0f}/"
            f"{_f(r, 'encore_others_cpu_pct', 0)} |"
        )
    notes = [f"- {r['model']}: Encore failed: {r['encore_error']}" for r in rows if "encore_error" in r]
    notes += [
        f"- {r['model']}: median epoch samples/s FuxiCTR {r['fuxictr_epoch_samples_per_s_median']:.0f}, "
        f"Encore {_f(r, 'encore_epoch_samples_per_s_median', 0)} (ratio {_f(r, 'epoch_throughput_ratio', 2)})"
        for r in rows
    ]
    notes += [
        f"- {r['model']}: Encore's run was reused from --encore-results (same seed, threads, precision), not "
        "retrained here: its samples/s were measured in that earlier run"
        for r in rows
        if r.get("encore_reused")
    ]
    notes += [
        f"- {r['model']}: not set in Encore's config (its code defaults apply): {r['encore_hparams_unverified']}"
        for r in rows
        if r.get("encore_hparams_unverified")
    ]
    lines += ["", *notes]
    _atomic_write(out / "results.md", "\n".join(lines) + "\n")


RECORD_KEY = ("model", "max_epochs", "threads", "encore_precision", "fuxictr_loader")


def record_row(path: Path, row: dict[str, Any]) -> None:
    """Upserts `row` into a committed CSV (docs/results/...), replacing the row with the same RECORD_KEY.

    Runs of different models and epoch caps land in one file that the docs tables are generated from.
    """
    rows: list[dict[str, Any]] = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    key = tuple(str(row[k]) for k in RECORD_KEY)
    rows = [r for r in rows if tuple(r.get(k, "") for k in RECORD_KEY) != key] + [row]
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(path, rows)


def _f(r: dict[str, Any], key: str, digits: int, signed: bool = False) -> str:
    v = r.get(key)
    if v is None:
        return "-"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _smoke_note(args: argparse.Namespace) -> str:
    if args.max_epochs is None:
        return ""
    return f" **Smoke run: epochs capped at {args.max_epochs}; not the BARS protocol.**"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="DeepFM,DCNv2", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=REPO_ROOT.parent / "shared" / "data" / "frappe" / "x1",
        help="folder with Frappe x1 train/valid/test.csv",
    )
    p.add_argument(
        "--fuxictr-src",
        type=Path,
        default=os.environ.get("FUXICTR_SRC") or None,
        help="checkout of reczoo/FuxiCTR v2.3.10 (for model_zoo/); env FUXICTR_SRC",
    )
    p.add_argument(
        "--fuxictr-python",
        type=Path,
        default=os.environ.get("FUXICTR_PYTHON") or None,
        help="python of a venv with fuxictr==2.3.10; env FUXICTR_PYTHON",
    )
    p.add_argument("--encore-python", type=Path, default=Path(sys.executable))
    p.add_argument("--threads", type=int, default=2, help="torch/OMP/MKL threads for both sides")
    p.add_argument(
        "--encore-precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="Encore's forward precision (bf16 = CPU autocast, fp32 weights); FuxiCTR always runs fp32",
    )
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument(
        "--fuxictr-loader",
        choices=["ray", "memory"],
        default="ray",
        help="FuxiCTR's batches: its own Ray parquet loader (as run_expid.py), or the parquet columns held as "
        "tensors through its `data_loader` hook (same model, loss, optimizer and protocol; no Ray workers)",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "ctr_vs_fuxictr")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="FuxiCTR's csv->parquet cache, reused across runs (default: OUT/fuxictr_cache)",
    )
    p.add_argument("--max-epochs", type=int, default=None, help="cap epochs on both sides (smoke test only)")
    p.add_argument("--skip-encore", action="store_true", help="run the FuxiCTR side only")
    p.add_argument(
        "--encore-results",
        type=Path,
        default=None,
        help="keep Encore's runs in this run_benchmark.py --out folder and reuse a cell already there "
        "(refused unless its threads, precision and epochs match); default: a temporary folder, always retrained",
    )
    p.add_argument(
        "--record",
        type=Path,
        default=None,
        help="also upsert each model's row into this CSV (by model, epoch cap, threads, precision), e.g. "
        "docs/results/ctr_vs_fuxictr_fp32/side_by_side.csv, which `python -m training.results --write-docs` "
        "turns into the docs tables",
    )
    p.add_argument(
        "--fuxictr-class",
        action="append",
        default=[],
        metavar="MODEL=CLASS",
        help="another class of the model's model_zoo folder, e.g. FFM=FFM (F-1 tables of D; default FFMv2, one "
        "(F-1)*D table as Encore keeps it: the same function, init and penalty)",
    )
    p.add_argument("--nice", type=int, default=None, help="run BOTH sides under nice -n N")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.nice = ["nice", "-n", str(args.nice)] if args.nice is not None else []
    args.fuxictr_class = dict(item.split("=", 1) for item in args.fuxictr_class)
    return args


def validate(args: argparse.Namespace) -> None:
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        raise BenchmarkError(f"unknown model(s) {unknown or args.models}; choose from {', '.join(MODELS)}")
    missing = [s for s in ("train", "valid", "test") if not (args.data_dir / f"{s}.csv").is_file()]
    if missing:
        raise BenchmarkError(f"data folder {args.data_dir} lacks {', '.join(s + '.csv' for s in missing)}")
    if args.fuxictr_src is None or not (args.fuxictr_src / "model_zoo").is_dir():
        raise BenchmarkError(
            f"no FuxiCTR checkout with model_zoo/ at {args.fuxictr_src} "
            "(git clone https://github.com/reczoo/FuxiCTR && git checkout v2.3.10)"
        )
    for m in args.models:
        zoo = args.fuxictr_src / "model_zoo" / MODELS[m]["fuxictr_zoo"] / "src" / "__init__.py"
        if not zoo.is_file():
            raise BenchmarkError(f"FuxiCTR checkout lacks {zoo}")
    if args.fuxictr_python is None or not os.access(args.fuxictr_python, os.X_OK):
        raise BenchmarkError(
            f"FuxiCTR python {args.fuxictr_python} is not an executable "
            f"(python3.11 -m venv ENV && ENV/bin/pip install torch==2.13.0 "
            f'fuxictr=={FUXICTR_VERSION} "polars<2")'
        )
    if args.threads < 1:
        raise BenchmarkError("--threads must be >= 1")
    if args.data_dir.resolve().parts[-2:] != ("frappe", "x1"):
        raise BenchmarkError(f"--data-dir must end in frappe/x1 (Encore reads <root>/frappe/x1), got {args.data_dir}")
    args.fuxictr_src = args.fuxictr_src.resolve()
    args.fuxictr_python = args.fuxictr_python.absolute()  # keep the venv symlink: resolving leaves the venv
    args.data_dir = args.data_dir.resolve()
    args.out = args.out.resolve()
    args.cache_dir = (args.cache_dir or args.out / "fuxictr_cache").resolve()
    args.encore_results = args.encore_results.resolve() if args.encore_results else None
    if not args.skip_encore and (REPO_ROOT / "training" / "run_benchmark.py").exists():
        for m in args.models:  # fail before hours of FuxiCTR training, not after
            check_encore_hparams(m)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        validate(args)
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="ctr_vs_fuxictr_") as tmp:
            work = Path(tmp)
            run_fuxictr(None, args, work)  # csv -> parquet once, outside every timed run
            for model in args.models:
                # Back to back, so both sides see similar hypervisor steal.
                fx = run_fuxictr(model, args, work)
                if fx["fuxictr_version"] != FUXICTR_VERSION:
                    print(f"[bench] warning: fuxictr {fx['fuxictr_version']}, expected {FUXICTR_VERSION}")
                if args.skip_encore:
                    en = {"error": "skipped (--skip-encore)"}
                else:
                    en = run_encore(model, args, work)
                rows.append(_row(model, fx, en, args))
                write_results(rows, args.out, args)  # partial results survive a later failure
                if args.record is not None:
                    record_row(args.record, rows[-1])
                print(f"[bench] {model}: {json.dumps(rows[-1])}", flush=True)
        print(f"[bench] wrote {args.out / 'results.csv'} and {args.out / 'results.md'}", flush=True)
        return 1 if any("encore_error" in r and not args.skip_encore for r in rows) else 0
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
