"""Frappe-shaped data of any size: Frappe's label and ten id columns, its field sizes and global id ranges, with a
planted click model, written as parquet in row groups (chunk by chunk: 20M rows never sit in memory at once).

    python -m training.datasets.frappe_synth --rows 2000000 --out DIR
    training/run_benchmark.py --dataset frappe-synth --data-root DIR --models DeepFM --out OUT [--stream]

DIR gets train.parquet (`--rows` rows), valid.parquet and test.parquet (`--eval-rows` each). Every chunk draws
from its own seeded generator, so a file is the same for the same seed, rows and chunk size. The label is
Bernoulli(sigmoid(bias + sum of per-value weights + a user x item factor dot)); users and items are drawn
with Zipf-like popularity, the context fields from fixed skewed distributions.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from encore.errors import EncoreError
from encore.io import sha256_file
from encore.schema import FieldConfig
from training.datasets.base import DatasetSplits, require_file
from training.datasets.dataset import Dataset, shared_data_root
from training.datasets.frappe import FIELDS, LABEL, OWNERS

# Frappe x1's distinct values per field; ids are global and consecutive in field order, as in x1 (user 0-956 ...).
FIELD_SIZES = {
    "user": 957,
    "item": 4082,
    "daytime": 7,
    "weekday": 7,
    "isweekend": 2,
    "homework": 3,
    "cost": 2,
    "weather": 9,
    "country": 80,
    "city": 233,
}
SPLIT_STREAMS = {"train": 0, "valid": 1, "test": 2}  # each split's own generator stream
FACTOR_DIM = 4


@dataclass(frozen=True)
class ClickModel:
    """The planted truth: per-field value probabilities, per-value logit weights, user and item factors."""

    offsets: dict[str, int]
    probabilities: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    user_factors: np.ndarray  # (users, FACTOR_DIM)
    item_factors: np.ndarray  # (items, FACTOR_DIM)
    bias: float = -1.0  # about a third of the rows positive, as in Frappe

    @classmethod
    def draw(cls, seed: int) -> ClickModel:
        rng = np.random.default_rng([seed, 99])
        offsets = dict(zip(FIELDS, np.cumsum([0] + [FIELD_SIZES[f] for f in FIELDS[:-1]]).tolist(), strict=True))
        probabilities, weights = {}, {}
        for name in FIELDS:
            n = FIELD_SIZES[name]
            popularity = 1.0 / (rng.permutation(n) + 5.0) ** 0.9  # Zipf-like, ranks shuffled
            probabilities[name] = popularity / popularity.sum()
            weights[name] = rng.normal(0.0, 0.8 if name in ("user", "item") else 0.3, n)
        users = rng.normal(0.0, 0.7, (FIELD_SIZES["user"], FACTOR_DIM))
        items = rng.normal(0.0, 0.7, (FIELD_SIZES["item"], FACTOR_DIM))
        return cls(offsets, probabilities, weights, users, items)

    def sample(self, rows: int, rng: np.random.Generator) -> pd.DataFrame:
        """`rows` rows: the label first, then the ten fields as global ids (int64, like frappe.py's frames)."""
        local = {name: rng.choice(FIELD_SIZES[name], size=rows, p=self.probabilities[name]) for name in FIELDS}
        logit = np.full(rows, self.bias)
        for name in FIELDS:
            logit += self.weights[name][local[name]]
        logit += np.einsum("ij,ij->i", self.user_factors[local["user"]], self.item_factors[local["item"]])
        label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        columns = {name: (local[name] + self.offsets[name]).astype(np.int64) for name in FIELDS}
        return pd.DataFrame({LABEL: label, **columns})


def write_split(path: Path, rows: int, model: ClickModel, seed: int, split: str, chunk_rows: int) -> None:
    """`rows` rows into `path`, one row group per chunk of `chunk_rows`; at most one chunk in memory."""
    tmp = path.with_suffix(".parquet.tmp")
    writer = None
    try:
        for chunk, start in enumerate(range(0, rows, chunk_rows)):
            rng = np.random.default_rng([seed, SPLIT_STREAMS[split], chunk])
            table = pa.Table.from_pandas(model.sample(min(chunk_rows, rows - start), rng), preserve_index=False)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table, row_group_size=chunk_rows)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(path)


def generate(out: Path, rows: int, seed: int = 2021, eval_rows: int = 50_000, chunk_rows: int = 100_000) -> Path:
    if rows < 1 or eval_rows < 1 or chunk_rows < 1:
        raise EncoreError("--rows, --eval-rows and --chunk-rows must be >= 1")
    out.mkdir(parents=True, exist_ok=True)
    model = ClickModel.draw(seed)
    for split, n in (("train", rows), ("valid", eval_rows), ("test", eval_rows)):
        write_split(out / f"{split}.parquet", n, model, seed, split, chunk_rows)
    return out


def load_frappe_synth(root: Path, features: str = "all", content: str = "none", stream: bool = False) -> DatasetSplits:
    """`root` holds train/valid/test.parquet from `generate`. With `stream`, the training rows stay on disk
    (`train_stream`) and training/streaming.py reads them row group by row group; valid and test are read."""
    if features != "all" or content != "none":
        raise EncoreError(f"frappe-synth supports only --features all --content none (got {features!r}, {content!r})")
    paths = {name: require_file(root / f"{name}.parquet") for name in ("train", "valid", "test")}
    train = pq.read_schema(paths["train"]).empty_table().to_pandas() if stream else pd.read_parquet(paths["train"])
    fields = [FieldConfig(name=c, kind="categorical", owner=OWNERS.get(c, "context"), min_count=1) for c in FIELDS]
    return DatasetSplits(
        "frappe-synth",
        train,
        pd.read_parquet(paths["valid"]),
        pd.read_parquet(paths["test"]),
        fields,
        LABEL,
        group_column="user",
        files={str(p): sha256_file(p) for p in paths.values()},
        variant="stream" if stream else "",
        train_stream=paths["train"] if stream else None,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, required=True, help="training rows")
    p.add_argument("--out", type=Path, required=True, help="folder for train/valid/test.parquet")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--eval-rows", type=int, default=50_000, help="rows of valid and of test")
    p.add_argument("--chunk-rows", type=int, default=100_000, help="rows per chunk and per parquet row group")
    args = p.parse_args(argv)
    out = generate(args.out, args.rows, args.seed, args.eval_rows, args.chunk_rows)
    print(f"wrote {args.rows:,} training rows to {out / 'train.parquet'}")
    return 0


DATASET = Dataset(
    "frappe-synth",
    load_frappe_synth,
    options=("stream",),
    feature_settings=("all",),
    content_settings=("none",),
    default_features="all",
    variant_of=lambda stream=False: "stream" if stream else "",
    data_root=lambda: shared_data_root() / "frappe-synth",
)

if __name__ == "__main__":
    raise SystemExit(main())
