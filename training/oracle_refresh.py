"""Rewrite the oracle_auc column of committed synthetic results with the exact oracle.

    PYTHONPATH=. .venv/bin/python -m training.oracle_refresh docs/results/synthetic_grid [...]
    PYTHONPATH=. .venv/bin/python -m training.results --write-docs      # then the tables

The oracle depends only on the world and the evaluation sets, never on a model, so a grid's rows need not be
re-run: each distinct `variant` (e.g. 'default/random+cold20') is parsed back into its world size and protocol,
the protocol is applied (its exact oracle cached beside the split, training/datasets/oracle.py) and every row's
oracle_auc is set to its split's value. What training negatives exclude never changes the eval sets.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from encore.errors import EncoreError
from training.datasets.protocol import ProtocolConfig, apply_protocol
from training.datasets.synthetic import default_root, load_world, world_params

_TAG = re.compile(r"^(?:(cold)(\d+)|(t|neg|k|s)(\d+)|trainneg-(train|all))$")


def parse_variant(variant: str) -> tuple[str, int | None, ProtocolConfig]:
    """'default-w7/random+cold20+t3' -> ('default', 7, ProtocolConfig(...)): the inverse of variant_of."""
    world, _, tag = variant.partition("/")
    size, _, seed = world.partition("-w")
    split, *parts = tag.split("+")
    fields: dict = {"split": split}
    names = {"t": "label_threshold", "neg": "negatives", "k": "kcore", "s": "seed"}
    for part in parts:
        match = _TAG.match(part)
        if match is None:
            raise EncoreError(f"cannot read the protocol part {part!r} of variant {variant!r}")
        if match.group(1):
            fields["cold_share"] = int(match.group(2)) / 100
        elif match.group(3):
            fields[names[match.group(3)]] = int(match.group(4))
        else:
            fields["train_negatives"] = match.group(5)
    return size, int(seed) if seed else None, ProtocolConfig(**fields)


def exact_oracle_auc(variant: str, root: Path | None = None) -> dict[str, float]:
    size, world_seed, cfg = parse_variant(variant)
    world = load_world(world_params(size, world_seed), root, progress=False)
    split_dir = world.folder / "splits" / cfg.hash()
    return apply_protocol(world.plays, cfg, split_dir, truth=world.generative_truth(cfg.label_threshold)).oracle_auc


def refresh(folder: Path, root: Path | None = None) -> dict[str, dict[str, float]]:
    """Set oracle_auc in folder/results.csv for every synthetic row; returns variant -> split -> AUC."""
    path = folder / "results.csv"
    rows = pd.read_csv(path)
    synthetic = rows.dataset.eq("synthetic") & rows.oracle_auc.notna()
    found = {}
    for variant in sorted(rows.loc[synthetic, "variant"].unique()):
        found[variant] = exact_oracle_auc(variant, root)
        at = synthetic & rows.variant.eq(variant)
        rows.loc[at, "oracle_auc"] = rows.loc[at, "split"].map(found[variant])
    rows.to_csv(path, index=False)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Rewrite committed synthetic results' oracle_auc with the exact oracle.")
    p.add_argument("folders", nargs="+", type=Path, help="result folders holding results.csv")
    p.add_argument("--data-root", type=Path, default=None, help=f"world cache (default {default_root()})")
    args = p.parse_args(argv)
    for folder in args.folders:
        for variant, aucs in refresh(folder, args.data_root).items():
            print(folder, variant, {k: round(v, 4) for k, v in aucs.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
