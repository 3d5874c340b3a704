"""One training step of the recall models, written to OUT.npz: run plainly (1 rank, the whole batch of
triples) or under `torchrun --nproc_per_node=2` (each rank its half: Dist.shard_rows, then the trainer's own
`data_parallel` + `train_step`). The gradients of BPR, VBPR, FREEDOM and LGMRec (two
content modalities, so LGMRec's batch-summed InfoNCE term takes part). Used by tests/training/test_distributed.py;
not a test module itself.

    python -m tests.training.ddp_recall_step OUT.npz [BATCH]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from tests.services.retriever.planted import ENCODER, make_planted
from training import distributed
from training.recall_data import RecallData
from training.recall_loop import data_parallel, train_step
from training.train_recall import RecallConfig, build_model

MODELS = ("BPR", "VBPR", "FREEDOM", "LGMRec")


def two_modality_data() -> RecallData:
    planted = make_planted(n_users=80, n_items=120, plays_per_user=16, seed=4)
    present = np.random.default_rng(0).random(len(planted.track_ids)) < 0.6  # the second modality partly missing
    content = planted.content.copy()
    content[~present, 8:] = 0.0
    modalities = [("text", slice(0, 8), np.ones(len(content), bool)), ("audio", slice(8, 16), present)]
    return RecallData.from_frames(planted.interactions, None, None, None, (planted.track_ids, content), modalities,
                                  ENCODER)  # fmt: skip


def main(out: str, batch: int = 256) -> None:
    torch.set_num_threads(1)
    dist = distributed.context()
    data = two_modality_data()
    users, items = data.train
    rng = np.random.default_rng(7)  # the same global batch on every rank
    pick = rng.choice(len(users), batch, replace=False)
    triples = np.stack([users[pick], items[pick], rng.integers(0, len(data.item_ids), batch)])
    mine = torch.from_numpy(triples[:, dist.shard_rows(batch).numpy()])  # the whole batch on one rank, half on two
    arrays: dict[str, np.ndarray] = {"world_size": np.array(dist.world_size), "rows": np.array(mine.shape[1])}
    for name in MODELS:
        torch.manual_seed(3)  # model init and the models' own randomness: the same on every rank
        model = build_model(data, RecallConfig(model=name, dim=8))
        model.train()
        model.new_epoch(np.random.default_rng(5))  # FREEDOM's pruned graph
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        loss = train_step(data_parallel(model, dist), optimizer, *mine)
        assert torch.isfinite(loss)
        for pname, p in model.named_parameters():
            arrays[f"{name}/{pname}"] = p.grad.numpy()
    if dist.is_main:
        np.savez(out, **arrays)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
