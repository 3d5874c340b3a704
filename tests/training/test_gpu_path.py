"""The GPU path (`--device cuda`, bf16 autocast as AMP) of both trainers. Without CUDA the GPU tests skip and
the flag is refused with one line; with CUDA (a lent GPU machine) a CTR and two recall models train there,
come back to the CPU, and learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encore.schema import FeatureSpec
from tests.factories import MIXED_FIELDS, make_mixed_frame
from tests.services.retriever.planted import ENCODER, make_planted
from training.data import TensorSplit
from training.models.ctr.deepfm import DeepFM
from training.run_benchmark import main as run_benchmark
from training.train_recall import train_recall
from training.trainer import TrainConfig, evaluate, fit

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("task", ["ctr", "recall"])
def test_device_cuda_without_cuda_is_refused_in_one_line(
    task: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--task", task, "--dataset", "synthetic", "--size", "quick", "--models", "BPR" if task == "recall"
            else "FM", "--device", "cuda", "--no-progress", "--out", str(tmp_path / "out")]  # fmt: skip
    assert run_benchmark(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: --device cuda: torch sees no CUDA device"), last
    assert not (tmp_path / "out" / "results.csv").exists()


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_ctr_trains_on_cuda_and_comes_back_to_the_cpu(precision: str) -> None:
    frame = make_mixed_frame(6000, 1)
    spec = FeatureSpec.fit(frame[:5000], MIXED_FIELDS)
    train, valid = TensorSplit.from_frame("train", spec, frame[:5000]), TensorSplit.from_frame("v", spec, frame[5000:])
    torch.manual_seed(0)
    model = DeepFM(spec, embedding_dim=8, hidden_units=(32, 16))
    cfg = TrainConfig(epochs=4, batch_size=512, progress=False, precision=precision, device="cuda")
    result = fit(model, train, valid, cfg)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert result.best_valid["auc"] > 0.7 and evaluate(model, valid)["auc"] == pytest.approx(result.best_valid["auc"])


@needs_cuda
@pytest.mark.parametrize("model", ["BPR", "FREEDOM", "LGMRec"])
def test_recall_trains_on_cuda(model: str) -> None:
    planted = make_planted(n_users=150, n_items=240, plays_per_user=24, seed=4)
    a = train_recall(planted.interactions, planted.content_dict(), encoder=ENCODER, model=model, dim=16, epochs=15,
                     patience=15, valid_fraction=0.1, batch_size=256, seed=2, device="cuda")  # fmt: skip
    assert np.isfinite(a.user_vectors).all() and a.metrics["recall@20"] > 2 * a.metrics["random_recall@20"]
