"""Training rows streamed from parquet row groups, for training data larger than memory.

`fit_spec_streaming(source, fields)` fits the feature spec in one pass that holds a row group at a time;
`StreamingSplit.open("train", spec, source)` then reads, encodes (the same `FeatureSpec.encode_packed` as the
in-memory `TensorSplit`) and batches one row group at a time. Under torchrun, `shard(rank, world_size)` gives
rank r the row groups r, r + W, r + 2W, ... and the same number of rows on every rank (the smallest rank's
count), so every rank takes the same number of steps. `source` is a parquet file or a folder of them.

Shuffling is per epoch: the rank's row groups in a seeded order, then the rows within each group. Rows are
never shuffled across groups, so a file written in a sorted order needs shuffling before it is streamed
(training/datasets/frappe_synth.py writes its rows in random order).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch

from encore.errors import EncoreError, SpecError
from encore.schema import FeatureSpec, FieldConfig, check_columns, field_counts

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RowGroup:
    path: Path
    index: int  # row group number inside the file
    rows: int


def row_groups(source: Path) -> list[RowGroup]:
    """Every row group of `source` (a parquet file, or a folder of them in name order), from the metadata only."""
    files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    if not files or not files[0].is_file():
        raise EncoreError(f"no parquet file at {source}")
    groups = []
    for path in files:
        meta = pq.ParquetFile(path).metadata
        groups += [RowGroup(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    return groups


def read_row_group(group: RowGroup, columns: Sequence[str] | None = None) -> pd.DataFrame:
    return pq.ParquetFile(group.path).read_row_group(group.index, columns=columns).to_pandas()


def fit_spec_streaming(source: Path, fields: Sequence[FieldConfig], label: str | None = "label") -> FeatureSpec:
    """The spec `FeatureSpec.fit` would fit on all of `source`'s rows, counted one row group at a time: id,
    categorical and numeric fields (numeric: the counts of each distinct value; `FeatureSpec.fit_counts` says
    what is exact)."""
    totals = {c.name: pd.Series(dtype="int64") for c in fields}
    for group in row_groups(source):
        frame = read_row_group(group)
        check_columns(frame, fields, label)
        for c in fields:
            totals[c.name] = totals[c.name].add(field_counts(frame[c.column], c), fill_value=0)
    return FeatureSpec.fit_counts(totals, fields, label)


@dataclass(frozen=True)
class StreamingSplit:
    """A split read from parquet row groups as it is batched; `len` is the rows one epoch yields on this rank."""

    name: str
    spec: FeatureSpec
    groups: tuple[RowGroup, ...]  # the row groups this rank reads
    rows: int

    @classmethod
    def open(cls, name: str, spec: FeatureSpec, source: Path) -> StreamingSplit:
        groups = tuple(row_groups(source))
        rows = sum(g.rows for g in groups)
        if rows == 0:
            raise SpecError(f"the {name} split is empty")
        return cls(name, spec, groups, rows)

    def shard(self, rank: int, world_size: int) -> StreamingSplit:
        """Rank `rank`'s row groups (every world_size-th from its rank on), cut to the smallest rank's rows."""
        if len(self.groups) < world_size:
            raise ValueError(f"{self.name}: {len(self.groups)} row groups cannot feed {world_size} ranks")
        per_rank = min(sum(g.rows for g in self.groups[r::world_size]) for r in range(world_size))
        return StreamingSplit(self.name, self.spec, self.groups[rank::world_size], per_rank)

    def __len__(self) -> int:
        return self.rows

    def encoded(self, group: RowGroup) -> Batch:
        """One row group's packed model inputs and labels, encoded by the spec."""
        frame = read_row_group(group)
        packed = self.spec.encode_packed(frame)
        labels = torch.from_numpy(self.spec.labels(frame))
        return {k: torch.from_numpy(v) for k, v in packed.items()}, labels

    def _prefetched(self, groups: list[RowGroup]) -> Iterator[Batch]:
        """`encoded(group)` for each group in turn, the next one read and encoded in a background thread while
        the caller trains on the current one (so two row groups are held, not one)."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.encoded, groups[0]) if groups else None
            for k in range(len(groups)):
                current = pending.result()
                pending = pool.submit(self.encoded, groups[k + 1]) if k + 1 < len(groups) else None
                yield current

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Shuffled batches when a generator is given, else every row in file order (evaluation).

        Holds two row groups (the current one and the next, being encoded) and fewer than `batch_size` rows
        carried over from the previous one."""
        order = range(len(self.groups))
        if generator is not None:
            order = torch.randperm(len(self.groups), generator=generator).tolist()
        carried: Batch | None = None
        left = self.rows
        for inputs, labels in self._prefetched([self.groups[i] for i in order]):
            if left == 0:
                break
            take = min(len(labels), left)
            left -= take
            rows = torch.randperm(len(labels), generator=generator)[:take] if generator else torch.arange(take)
            inputs, labels = {k: v.index_select(0, rows) for k, v in inputs.items()}, labels.index_select(0, rows)
            if carried is not None:
                inputs = {k: torch.cat([carried[0][k], v]) for k, v in inputs.items()}
                labels = torch.cat([carried[1], labels])
            full = len(labels) - len(labels) % batch_size
            for start in range(0, full, batch_size):
                yield {k: v[start : start + batch_size] for k, v in inputs.items()}, labels[start : start + batch_size]
            carried = ({k: v[full:] for k, v in inputs.items()}, labels[full:]) if full < len(labels) else None
        if carried is not None:
            yield carried
