"""Data-parallel training with torch.distributed, launched by torchrun; a no-op in a plain process.

    torchrun --standalone --nproc_per_node=2 training/run_benchmark.py --dataset frappe --models DeepFM \
        --seeds 2021 --out DIR

torchrun sets RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and the rendezvous variables; `context()` joins the group
(gloo on CPU, NCCL on CUDA) the first time it is called and returns the same `Dist` afterwards. What the
trainers (CTR: training/trainer.py and training/cell.py; recall: training/recall_loop.py) ask of it:

- `shard(split)`: this rank's rows, every world_size-th row from its rank on, cut to the same length on every
  rank (at most world_size - 1 rows dropped), so every rank takes the same number of steps and none waits
  for a collective the others never reach (a streamed split: every world_size-th row group, training/streaming.py);
- `wrap(model)`: DistributedDataParallel, which averages gradients across ranks in backward; with equal
  per-rank batches that is the gradient of the global batch;
- `shard_rows(n)`: the same cut as row numbers, for a trainer that samples its own rows (the recall trainer's
  training pairs, training/recall_loop.py);
- `all_sum(...)`: totals over the ranks (a logged epoch loss);
- `agree(flag)`: rank 0's decision (an improved epoch, early stop), broadcast so every rank acts alike;
- `rank_seed(seed)`: a distinct seed per rank (shuffling, negative sampling, dropout); rank 0 keeps `seed`,
  so a 1-rank run is the plain run;
- `threads()`: the cores of this machine split between the ranks on it (no oversubscription).

Batch size: the configured `batch_size` is global; each rank trains on `per_rank_batch(batch_size)` rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as torch_dist

if TYPE_CHECKING:
    from torch import nn

    from training.data import TensorSplit
    from training.streaming import StreamingSplit

RANK_SEED_STRIDE = 1_000_003  # a prime: rank seeds of nearby base seeds do not collide


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    backend: str = "none"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rank_seed(self, seed: int) -> int:
        return seed + RANK_SEED_STRIDE * self.rank

    def threads(self, cores: int | None = None) -> int:
        cores = cores or os.cpu_count() or 1
        return max(1, cores // self.local_world_size)

    def per_rank_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ValueError(f"batch_size {batch_size} (global) does not split evenly over {self.world_size} ranks")
        return batch_size // self.world_size

    def shard(self, split: TensorSplit | StreamingSplit) -> TensorSplit | StreamingSplit:
        if not self.enabled:
            return split
        from training.data import TensorSplit

        if not isinstance(split, TensorSplit):  # streamed: each rank reads its own row groups
            return split.shard(self.rank, self.world_size)

        rows = self.shard_rows(len(split), split.name)
        groups = split.groups[rows.numpy()] if split.groups is not None else None
        inputs = {k: v.index_select(0, rows) for k, v in split.inputs.items()}
        return TensorSplit(split.name, inputs, split.labels.index_select(0, rows), groups)

    def shard_rows(self, n: int, name: str = "train") -> torch.Tensor:
        """This rank's row numbers of n rows: rank, rank + W, ..., the same count on every rank (at most W - 1
        of the n rows left out), so every rank takes the same number of steps."""
        per_rank = n // self.world_size
        if per_rank == 0:
            raise ValueError(f"{name}: {n} rows cannot feed {self.world_size} ranks")
        return torch.arange(self.rank, per_rank * self.world_size, self.world_size)

    def wrap(self, model: nn.Module, sync_buffers: bool = True) -> nn.Module:
        """DistributedDataParallel around `model` (itself in one process). sync_buffers=False: buffers that
        never change (the recall models' content) are not re-sent from rank 0 before every step."""
        if not self.enabled:
            return model
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        options = {"device_ids": [device.index] if device.type == "cuda" else None}
        if not sync_buffers:  # torch 2.13 renamed the option (the old name warns); older torch has only the old
            new = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
            options["forward_sync_buffers" if new else "broadcast_buffers"] = False
        return DistributedDataParallel(model, **options)

    def all_sum(self, *values: float) -> list[float]:
        """The sums over the ranks of each value (float64), e.g. a loss total and its row count."""
        if not self.enabled:
            return list(values)
        device = "cuda" if self.backend == "nccl" else "cpu"
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag` on every rank (others pass anything)."""
        if not self.enabled:
            return flag
        device = "cuda" if self.backend == "nccl" else "cpu"
        value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
        torch_dist.broadcast(value, src=0)
        return bool(value.item())

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def record(self) -> dict:
        """What a run manifest keeps about the launch."""
        return {"world_size": self.world_size, "backend": self.backend}


_CONTEXT: Dist | None = None


def check_device(device: str) -> torch.device:
    """`device` as a torch.device, refused with one line when it names a GPU this process cannot see."""
    from encore.errors import EncoreError

    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise EncoreError(f"--device {device!r}: {exc}") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise EncoreError(f"--device {device}: torch sees no CUDA device (torch {torch.__version__})")
    if parsed.type not in ("cpu", "cuda"):
        raise EncoreError(f"--device {device}: cpu or cuda only")
    return parsed


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun), readable before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """RANK as torchrun sets it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def context(device: str = "cpu") -> Dist:
    """The process's Dist: joins the torchrun group on first call when WORLD_SIZE > 1, else a 1-rank Dist."""
    global _CONTEXT
    if _CONTEXT is None:
        check_device(device)
        world_size = launched_world_size()
        if world_size <= 1:
            _CONTEXT = Dist()
        else:
            backend = "nccl" if device.startswith("cuda") else "gloo"
            if not torch_dist.is_initialized():
                torch_dist.init_process_group(backend=backend)
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            _CONTEXT = Dist(
                rank=torch_dist.get_rank(),
                world_size=torch_dist.get_world_size(),
                local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
                backend=backend,
            )
    return _CONTEXT


def shutdown() -> None:
    global _CONTEXT
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    _CONTEXT = None
