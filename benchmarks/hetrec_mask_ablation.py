"""Does HetRec's `dense` content help cold artists through the audio, or through the `audio_missing` mask?

Most HetRec artists have no Spotify link, so their `dense` content is a zero vector plus `audio_missing` = 1.
Linked artists are the better-known ones, so the mask alone may carry popularity. This trains the grid's
cells (same data, config, seeds and trainer as `training/run_benchmark.py --dataset hetrec-lastfm-2k --cold`)
on two ablations of `dense`:
  dense-mask-only    every audio vector zeroed: only the mask says anything about the item
  dense-no-mask      the audio vectors without the mask field
and also reports the mask on its own as a score (AUC of "linked to Spotify" per eval split, no training).
Compare with the grid's `none` and `dense` cells (docs/results/hetrec_grid/results.csv).

Run:  .venv/bin/python benchmarks/hetrec_mask_ablation.py --features id --models LR,FM,DeepFM,DCNv2 \
          --seeds 1,2,3 --out results/hetrec_mask_ablation
      .venv/bin/python -m training.results results/hetrec_mask_ablation --out docs/results/hetrec_mask_ablation
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encore.errors import EncoreError  # noqa: E402
from training.datasets.content import DENSE_FIELD, MASK_FIELD  # noqa: E402
from training.datasets.hetrec import DATASET as HETREC  # noqa: E402
from training.run_benchmark import load_config, parse_seeds, run_cells, split_list  # noqa: E402

DATASET = HETREC.name


def mask_only(frame: pd.DataFrame) -> pd.DataFrame:
    dim = len(frame[DENSE_FIELD].iloc[0])
    return frame.assign(**{DENSE_FIELD: [np.zeros(dim, dtype=np.float32)] * len(frame)})


def no_mask(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[MASK_FIELD])


ABLATIONS = {"dense-mask-only": mask_only, "dense-no-mask": no_mask}


def ablate(data, name: str):
    """The `dense` DatasetSplits with every frame (and every resampled training frame) passed through one ablation."""
    change = ABLATIONS[name]
    train = change(data.train)
    sampler = data.train_sampler
    return replace(
        data,
        content=name,
        fields=[f for f in data.fields if f.column in train],  # an ablation that drops a column drops its field
        train=train,
        valid=change(data.valid),
        test=change(data.test),
        extra_eval={k: change(v) for k, v in data.extra_eval.items()},
        train_sampler=(lambda epoch, seed: change(sampler(epoch, seed))) if sampler else None,
    )


def run(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", default="id", help="one feature setting: id, id+cat, id+cat+num")
    p.add_argument("--models", default="LR,FM,DeepFM,DCNv2")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--ablations", default=",".join(ABLATIONS))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="override the maximum number of epochs")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)  # bad flags fail before the data loads
    ablations = split_list(args.ablations, "--ablations")
    unknown = sorted(set(ablations) - set(ABLATIONS))
    if unknown:
        p.error(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)}")

    import torch

    from training.cell import GridSettings
    from training.models.registry import get_ctr_model
    from training.results import ResultsTable

    torch.set_num_threads(args.threads)
    models = {name: get_ctr_model(name) for name in split_list(args.models, "--models")}
    protocol = replace(HETREC.default_protocol, cold_share=0.2)  # the grid's --cold
    dense = HETREC.load(HETREC.data_root(), args.features, "dense", protocol=protocol, progress=False)
    for split, frame in dense.eval_splits().items():
        linked = 1 - frame[MASK_FIELD].to_numpy()
        print(f"mask as a score, {split}: AUC {roc_auc_score(frame[dense.label], linked):.4f} "
              f"({1 - linked.mean():.1%} of rows unlinked)")  # fmt: skip

    grid = GridSettings(load_config(DATASET), args.epochs, args.threads, progress=False)
    results = ResultsTable(args.out)
    for ablation in ablations:
        data = ablate(dense, ablation)
        todo = [
            (m, s)
            for m in models
            for s in seeds
            if not results.done(DATASET, m, args.features, ablation, s, data.variant)
        ]
        if todo:
            run_cells(data, todo, models, grid, results)


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except EncoreError as exc:  # unknown model, bad seeds, missing data: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
