"""Data-parallel training (training/distributed.py) with two real processes on this machine (torchrun, gloo),
for the CTR trainer and the recall trainer: the gradients of one step on 2 ranks x B/2 equal those of 1 rank
x B; a short 2-rank benchmark run ends within seed noise of the 1-rank run, writes its results once and records
its world size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from encore.artifacts import load_bundle
from tests.factories import write_frappe_like
from training.data import TensorSplit
from training.distributed import Dist

ROOT = Path(__file__).resolve().parents[2]


def _torchrun() -> list[str]:
    local = Path(sys.executable).parent / "torchrun"
    found = str(local) if local.exists() else shutil.which("torchrun")
    if found is None:
        pytest.skip("torchrun is not installed (it comes with torch)")
    return [found, "--standalone", "--nproc_per_node=2"]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


# --- the pieces, one process ------------------------------------------------------------------------------


def _split(n: int) -> TensorSplit:
    return TensorSplit("train", {"x": torch.arange(n).unsqueeze(1)}, torch.zeros(n), np.arange(n))


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder() -> None:
    split = _split(11)
    shards = [Dist(rank=r, world_size=3).shard(split) for r in range(3)]
    rows = [s.inputs["x"].squeeze(1).tolist() for s in shards]
    assert [len(r) for r in rows] == [3, 3, 3]  # uneven input, even shards: every rank takes as many steps
    assert sorted(sum(rows, [])) == list(range(9))
    assert [s.groups.tolist() for s in shards] == rows  # groups follow their rows
    assert Dist().shard(split) is split
    with pytest.raises(ValueError, match="cannot feed"):
        Dist(rank=0, world_size=4).shard(_split(3))


def test_rank_seeds_threads_and_batches() -> None:
    assert Dist().rank_seed(2021) == 2021  # one rank: the plain run
    seeds = {Dist(rank=r, world_size=4).rank_seed(2021) for r in range(4)}
    assert len(seeds) == 4
    assert Dist(rank=0, world_size=2, local_world_size=2).threads(cores=2) == 1
    assert Dist(rank=0, world_size=4, local_world_size=4).threads(cores=2) == 1
    assert Dist(world_size=2).per_rank_batch(4096) == 2048
    with pytest.raises(ValueError, match="does not split evenly"):
        Dist(world_size=3).per_rank_batch(4096)


# --- two processes ----------------------------------------------------------------------------------------


def test_one_step_on_two_ranks_gives_the_one_rank_gradients(tmp_path: Path) -> None:
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    single = _run([sys.executable, "-m", "tests.training.ddp_step", str(one), "512"])
    assert single.returncode == 0, single.stderr
    double = _run([*_torchrun(), "-m", "tests.training.ddp_step", str(two), "512"])
    assert double.returncode == 0, double.stderr
    a, b = np.load(one), np.load(two)
    assert (int(a["world_size"]), int(a["rows"])) == (1, 512)
    assert (int(b["world_size"]), int(b["rows"])) == (2, 256)  # each rank held half the batch
    names = [n for n in a.files if n not in ("world_size", "rows")]
    assert set(names) == set(b.files) - {"world_size", "rows"} and len(names) > 10
    for name in names:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-7, err_msg=name)
    assert any(np.abs(a[n]).max() > 1e-3 for n in names)  # real gradients, not zeros


def _benchmark(launcher: list[str], data: Path, out: Path, seeds: str, *extra: str) -> pd.DataFrame:
    command = [
        *launcher, str(ROOT / "training" / "run_benchmark.py"), "--dataset", "frappe", "--models", "FM",
        "--seeds", seeds, "--epochs", "6", "--no-progress", "--data-root", str(data), "--out", str(out), *extra,
    ]  # fmt: skip
    proc = _run(command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    return results[results.split == "test"].set_index("seed")


@pytest.mark.slow
def test_two_rank_run_ends_within_seed_noise_of_one_rank(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_frappe_like(data, n_train=8001, n_eval=2000)  # odd: the shards are uneven until cut
    single = _benchmark([sys.executable], data, tmp_path / "one", "1,2,3", "--threads", "1")
    double = _benchmark(_torchrun(), data, tmp_path / "two", "1")

    noise = single.auc.max() - single.auc.min()
    gap = abs(double.auc[1] - single.auc[1])
    assert gap <= max(3 * noise, 0.005), (gap, noise)
    assert double.auc[1] > 0.6  # the planted signal is learnt

    results = pd.read_csv(tmp_path / "two" / "results.csv")
    assert sorted(results.split) == ["test", "valid"]  # written once, not once per rank
    runs = list((tmp_path / "two" / "runs").iterdir())
    assert [p.name for p in runs] == ["frappe_all_none_FM_s1"]
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["backend"] == "gloo"
    assert manifest["batch_size_per_rank"] * 2 == manifest["train_config"]["batch_size"]
    assert manifest["threads"] == max(1, (os.cpu_count() or 1) // 2)  # per rank: no oversubscription
    one = json.loads((tmp_path / "one" / "runs" / "frappe_all_none_FM_s1" / "manifest.json").read_text())
    assert one["world_size"] == 1 and one["batch_size_per_rank"] == one["train_config"]["batch_size"]


def test_trainer_imports_without_service_dependencies() -> None:
    """The lent GPU machines have torch and onnxruntime but no Feast or web stack: the trainer, the benchmark
    entry point, the recall trainer and the Frappe and synthetic loaders must import without them."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('feast', 'fastapi', 'redis', 'uvicorn', 'starlette', 'httpx', 'aiohttp', 'faiss'):
            raise ImportError('service-only: ' + name)
sys.meta_path.insert(0, Block())
import training.cell, training.distributed, training.run_benchmark, training.trainer
import training.recall_benchmark, training.recall_loop, training.streaming, training.train_recall
from training.datasets.registry import get_dataset, recall_dataset
get_dataset('frappe')
recall_dataset('synthetic')
"""
    proc = _run([sys.executable, "-c", code])
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- the recall trainer -----------------------------------------------------------------------------------


def test_recall_step_on_two_ranks_gives_the_one_rank_gradients(tmp_path: Path) -> None:
    """BPR, VBPR and the graph models FREEDOM and LGMRec: every rank propagates over the whole graph and takes
    half the batch's triples; DDP's averaged gradients are the whole batch's (LGMRec's batch-summed InfoNCE
    term included: two modalities)."""
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    single = _run([sys.executable, "-m", "tests.training.ddp_recall_step", str(one), "256"])
    assert single.returncode == 0, single.stderr[-3000:]
    double = _run([*_torchrun(), "-m", "tests.training.ddp_recall_step", str(two), "256"])
    assert double.returncode == 0, double.stderr[-3000:]
    a, b = np.load(one), np.load(two)
    assert (int(a["world_size"]), int(a["rows"])) == (1, 256)
    assert (int(b["world_size"]), int(b["rows"])) == (2, 128)
    names = [n for n in a.files if "/" in n]
    assert set(names) == {n for n in b.files if "/" in n}
    assert {n.split("/")[0] for n in names} == {"BPR", "VBPR", "FREEDOM", "LGMRec"}
    # float32 sums in another order: absolute slack relative to the model's largest gradient (a bias gradient
    # that is a sum of cancelling terms sits at ~1e-9 on either side)
    scale = {
        m: max(float(np.abs(a[n]).max()) for n in names if n.startswith(m + "/"))
        for m in ("BPR", "VBPR", "FREEDOM", "LGMRec")
    }
    assert min(scale.values()) > 1e-4  # real gradients in every model, not zeros
    for name in names:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5 * scale[name.split("/")[0]], err_msg=name)


def _recall(launcher: list[str], out: Path, seeds: str, *extra: str) -> pd.DataFrame:
    command = [
        *launcher, str(ROOT / "training" / "run_benchmark.py"), "--task", "recall", "--dataset", "synthetic",
        "--size", "quick", "--models", "BPR,FREEDOM", "--seeds", seeds, "--epochs", "12", "--patience", "12",
        "--batch-size", "512", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip
    proc = _run(command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    return results[results.split == "test"].set_index(["model", "seed"])


@pytest.mark.slow
def test_two_rank_recall_run_ends_within_seed_noise_of_one_rank(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ENCORE_CACHE_DIR", str(tmp_path / "cache"))  # the world is built by the first run
    single = _recall([sys.executable], tmp_path / "one", "1,2,3", "--threads", "1")
    double = _recall(_torchrun(), tmp_path / "two", "1")

    for model in ("BPR", "FREEDOM"):
        seeds = single.loc[model, "recall@20"]
        gap = abs(double.loc[(model, 1), "recall@20"] - seeds[1])
        assert gap <= max(3 * (seeds.max() - seeds.min()), 0.02), (model, gap, seeds.tolist())
        assert double.loc[(model, 1), "recall@20"] > 2 * double.loc[(model, 1), "random_recall@20"]

    results = pd.read_csv(tmp_path / "two" / "results.csv")
    assert len(results) == 2 * 3  # models x splits, written once (not once per rank)
    runs = sorted((tmp_path / "two" / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        launch = json.loads((run / "manifest.json").read_text())["training"]
        assert launch == {"world_size": 2, "backend": "gloo", "batch_size_per_rank": 256}
        assert load_bundle(run).components["retriever"]["model"] in ("BPR", "FREEDOM")  # servable
    one = json.loads(next((tmp_path / "one" / "runs").iterdir()).joinpath("manifest.json").read_text())
    assert one["training"] == {"world_size": 1, "backend": "none", "batch_size_per_rank": 512}
