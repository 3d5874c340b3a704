"""Trainer with the BARS/FuxiCTR protocol as default.

Adam; validate every epoch on AUC; multiply lr by `lr_decay` on a non-improving epoch and stop after
`patience` of them (not during the first `warmup_epochs`, 0 by default as in BARS); clip gradients; add
lambda/2 * ||E||^2 over whole embedding tables to every batch loss; reload the best weights at the end.
The model stays loss- and optimizer-free.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from training.data import TensorSplit
from training.distributed import Dist, check_device
from training.metrics import binary_metrics, binary_metrics_per_user
from training.models.base import CTRModel


@dataclass
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 4096
    epochs: int = 100
    patience: int = 2  # non-improving epochs before stopping (each one also decays the lr)
    # The first `warmup_epochs` epochs neither decay the lr nor count toward patience (Keras' start_from_epoch).
    # With ids alone, FM-like models dip in valid AUC at epoch 2 while the loss still falls; without a warm-up
    # the plateau rule cuts the lr tenfold there and stops at epoch 3 with a popularity-level model.
    warmup_epochs: int = 0
    lr_decay: float = 0.1
    min_lr: float = 1e-6
    clip_norm: float = 10.0
    embedding_l2: float = 0.0  # lambda of the whole-table embedding penalty
    net_l2: float = 0.0  # lambda/2 * ||p||^2 over every non-embedding parameter
    monitor: str = "auc"  # maximized
    eval_batch_size: int = 16384
    seed: int = 2021
    progress: bool = True
    # "bf16": CPU autocast of the forward pass (matmuls in bfloat16; weights, optimizer, loss and evaluation
    # stay fp32). 1.5x the samples/s of fp32 for DeepFM on this AVX512-BF16 machine; opt-in, recorded.
    precision: str = "fp32"
    # "cuda" / "cuda:N": model and batches on the GPU (bf16 is then CUDA autocast: AMP without a grad scaler,
    # bf16 has fp32's range); the model returns to the CPU when `fit` ends (export and evaluation run there).
    device: str = "cpu"
    # torch.compile of the training forward pass (Inductor: generated kernels that fuse elementwise chains; needs a
    # C++ compiler on CPU). Opt-in: on one CPU thread it sped EulerNet's step up 1.33x and moved the other GEMM-bound
    # models by 0.85-1.07x (docs/performance.md, "Compiled training steps"). Evaluation runs the uncompiled model.
    compile: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_seconds: float
    eval_seconds: float
    lr: float
    steal_pct: float
    valid: dict[str, float]


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    train_seconds: float  # time inside the training loop only (no validation)
    samples_seen: int
    history: list[EpochLog] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def median_steal_pct(self) -> float:
        return float(np.median([e.steal_pct for e in self.history])) if self.history else 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict(model: nn.Module, split: TensorSplit, batch_size: int = 16384) -> np.ndarray:
    """Probabilities for every row of `split`, in order."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.sigmoid(model(_to(inputs, device))).cpu() for inputs, _ in split.batches(batch_size)]
    return torch.cat(out).numpy()


def _to(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's inputs on `device` (no copy where they already are)."""
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


def evaluate(model: nn.Module, split: TensorSplit, batch_size: int = 16384) -> dict[str, float]:
    scores = predict(model, split, batch_size)
    return binary_metrics(split.labels.numpy(), scores, split.groups)


def evaluate_per_user(
    model: nn.Module, split: TensorSplit, batch_size: int = 16384
) -> tuple[dict[str, float], pd.DataFrame | None]:
    """`evaluate`'s metrics and, when the split has groups, the per-user AUCs behind its GAUC."""
    return binary_metrics_per_user(split.labels.numpy(), predict(model, split, batch_size), split.groups)


def fit(
    model: CTRModel,
    train: TensorSplit,
    valid: TensorSplit,
    cfg: TrainConfig,
    resample: Callable[[int], TensorSplit] | None = None,
    dist: Dist | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
) -> TrainResult:
    """Train `model` in place and leave it holding the best-validation weights.

    `resample(epoch)`, when given, supplies the training rows of every epoch after the first (fresh
    negatives each epoch); `train` is epoch 1. Without it every epoch reuses `train` (fixed negatives).
    `on_epoch(log)`, when given, sees each epoch's validation log on rank 0; an exception from it ends training
    (single process only: hyper-parameter search does not run data-parallel).

    Data-parallel (`dist` of several ranks, training/distributed.py): `train` and `resample` give this rank's
    shard, cfg.batch_size is global, gradients are averaged across ranks, and rank 0 alone validates; its
    "improved" verdict is broadcast, so the lr decay, patience and best weights move alike on every rank.
    """
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {cfg.precision!r}")
    dist = dist or Dist()
    seed_everything(dist.rank_seed(cfg.seed))
    generator = torch.Generator().manual_seed(dist.rank_seed(cfg.seed))  # CPU: the rows are shuffled there
    batch_size = dist.per_rank_batch(cfg.batch_size)
    model.to(check_device(cfg.device))
    net = dist.wrap(model)
    if cfg.compile:  # static shapes: one graph for full batches and one for an epoch's shorter last batch
        net = torch.compile(net, dynamic=False)
    optimizer = adam(model.parameters(), cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    table_ids = {id(t) for t in model.embedding_tables()}
    # FuxiCTR's net_regularizer covers every non-embedding parameter (biases, norms, EulerNet's orders and mu too).
    net_weights = [p for p in model.parameters() if id(p) not in table_ids]

    best_score, best_epoch, best_state, best_valid = -np.inf, 0, None, {}
    bad_epochs, history, train_seconds, samples, epochs_run = 0, [], 0.0, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        epochs_run = epoch
        if resample is not None and epoch > 1:
            train = resample(epoch)
        cpu = CpuTimes.now()
        mean_loss, epoch_train = _train_epoch(
            net, model, train, optimizer, loss_fn, cfg, generator, epoch, net_weights, batch_size
        )
        train_seconds += epoch_train
        samples += len(train) * dist.world_size
        improved = False
        if dist.is_main:
            log = _validate(model, valid, cfg, epoch, mean_loss, epoch_train, optimizer.param_groups[0]["lr"], cpu)
            history.append(log)
            if on_epoch is not None:
                on_epoch(log)
            improved = log.valid[cfg.monitor] > best_score + 1e-6
            if improved:
                best_score, best_valid = log.valid[cfg.monitor], log.valid
        if dist.agree(improved):
            best_epoch, bad_epochs = epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        elif epoch > cfg.warmup_epochs:
            bad_epochs += 1
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * cfg.lr_decay, cfg.min_lr)
            if bad_epochs >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.cpu()
    return TrainResult(best_epoch, best_valid, epochs_run, train_seconds, samples, history)


def adam(params, lr: float) -> torch.optim.Adam:
    """BARS's Adam as one fused kernel over all parameters: the same update as the per-tensor loop (equal to
    float rounding, tests/training/test_trainer.py), 1.4 ms -> 0.4 ms a step on CPU for a Frappe DeepFM-sized net,
    a tenth of FM's whole step."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def batch_loss(
    net: nn.Module,
    tables: list[nn.Parameter],
    net_weights: list[nn.Parameter],
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    loss_fn: nn.Module,
    cfg: TrainConfig,
) -> torch.Tensor:
    """The training loss of one batch: BCE on the logits plus the configured L2 penalties."""
    with torch.autocast(labels.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        logits = net(inputs)
    loss = loss_fn(logits.float(), labels)
    if cfg.embedding_l2 > 0:
        loss = loss + cfg.embedding_l2 / 2 * sum(t.pow(2).sum() for t in tables)
    if cfg.net_l2 > 0:
        loss = loss + cfg.net_l2 / 2 * sum(w.pow(2).sum() for w in net_weights)
    return loss


def _train_epoch(
    net: nn.Module,
    model: CTRModel,
    train: TensorSplit,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    generator: torch.Generator,
    epoch: int,
    net_weights: list[nn.Parameter],
    batch_size: int,
) -> tuple[float, float]:
    """One pass over `train` in shuffled batches, penalties and clipping included; (mean batch loss, seconds).

    `net` is `model` itself or its DistributedDataParallel wrapper (which averages gradients in backward)."""
    tables = model.embedding_tables()
    net.train()
    t0 = time.perf_counter()
    total_loss, n_batches = 0.0, 0
    n_steps = (len(train) + batch_size - 1) // batch_size
    bar = tqdm(
        train.batches(batch_size, generator),
        total=n_steps,
        desc=f"epoch {epoch}",
        leave=False,
        disable=not cfg.progress,
        mininterval=1.0,
    )
    device = next(model.parameters()).device
    for inputs, labels in bar:
        inputs, labels = _to(inputs, device), labels.to(device, non_blocking=True)
        loss = batch_loss(net, tables, net_weights, inputs, labels, loss_fn, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        total_loss += loss.item()
        n_batches += 1
    return total_loss / max(n_batches, 1), time.perf_counter() - t0


_PROC_STAT = Path("/proc/stat")


@dataclass
class CpuTimes:
    """Aggregate CPU jiffies from /proc/stat (zeros where it does not exist): each epoch logs the share of CPU time
    the hypervisor took from this VM (steal), which explains a slow epoch that the code did not cause."""

    total: int
    steal: int

    @classmethod
    def now(cls) -> CpuTimes:
        try:
            fields = [int(x) for x in _PROC_STAT.read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return cls(0, 0)
        steal = fields[7] if len(fields) > 7 else 0
        return cls(sum(fields[:8]), steal)

    def steal_pct_since(self) -> float:
        """Share of CPU time the hypervisor took since this reading, in percent."""
        later = CpuTimes.now()
        total = later.total - self.total
        return 100.0 * (later.steal - self.steal) / total if total > 0 else 0.0


def _validate(
    model: CTRModel,
    valid: TensorSplit,
    cfg: TrainConfig,
    epoch: int,
    mean_loss: float,
    epoch_train: float,
    lr: float,
    cpu: CpuTimes,
) -> EpochLog:
    """Evaluate on the validation split and log the epoch (one line even without a bar: long runs show progress)."""
    t1 = time.perf_counter()
    valid_metrics = evaluate(model, valid, cfg.eval_batch_size)
    eval_seconds = time.perf_counter() - t1
    steal = cpu.steal_pct_since()
    shown = " ".join(f"{k}={v:.6f}" for k, v in valid_metrics.items())
    tqdm.write(
        f"epoch {epoch}: loss={mean_loss:.5f} valid {shown} ({epoch_train:.1f}s train, lr {lr:g})", file=sys.stderr
    )
    return EpochLog(epoch, mean_loss, epoch_train, eval_seconds, lr, steal, valid_metrics)
