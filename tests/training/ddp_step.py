"""One training step's gradients, written to OUT.npz: run plainly (1 rank, the whole batch) or under
`torchrun --nproc_per_node=2` (each rank its half, training.distributed.Dist.shard + wrap). Used by
tests/training/test_distributed.py; not a test module itself.

    python -m tests.training.ddp_step OUT.npz [BATCH]
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from encore.schema import FeatureSpec
from tests.factories import MIXED_FIELDS, make_mixed_frame
from training import distributed
from training.data import TensorSplit
from training.models.ctr.deepfm import DeepFM
from training.trainer import TrainConfig, batch_loss


def main(out: str, batch: int = 512) -> None:
    torch.set_num_threads(1)
    dist = distributed.context()
    frame = make_mixed_frame(batch, 7)
    spec = FeatureSpec.fit(frame, MIXED_FIELDS)
    split = dist.shard(TensorSplit.from_frame("train", spec, frame))  # the whole batch on one rank, half on two
    torch.manual_seed(3)
    model = DeepFM(spec, embedding_dim=8, hidden_units=(32, 16))  # no dropout or batch norm: deterministic
    net = dist.wrap(model)
    cfg = TrainConfig(embedding_l2=0.05, net_l2=1e-3)
    tables = model.embedding_tables()
    others = [p for p in model.parameters() if all(p is not t for t in tables)]
    inputs, labels = next(split.batches(len(split)))
    batch_loss(net, tables, others, inputs, labels, nn.BCEWithLogitsLoss(), cfg).backward()
    if dist.is_main:
        grads = {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
        np.savez(out, world_size=np.array(dist.world_size), rows=np.array(len(split)), **grads)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
