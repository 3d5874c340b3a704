"""Training rows streamed from parquet row groups (training/streaming.py) on Frappe-shaped generated data
(training/datasets/frappe_synth.py): the same spec and the same encoded rows as the in-memory path, disjoint
row groups per rank, and a run through `run_benchmark.py --stream` that learns the planted signal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from encore.errors import SpecError
from encore.schema import FeatureSpec, FieldConfig
from tests.factories import make_mixed_frame
from training.data import TensorSplit
from training.datasets.frappe import FIELDS
from training.datasets.frappe_synth import FIELD_SIZES, generate, load_frappe_synth
from training.distributed import Dist
from training.run_benchmark import main as run_benchmark
from training.streaming import StreamingSplit, fit_spec_streaming, row_groups

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,500 training rows in row groups of 300 (the last one 100 rows: uneven on purpose)."""
    return generate(tmp_path_factory.mktemp("synth"), rows=2500, seed=7, eval_rows=400, chunk_rows=300)


def _in_memory(folder: Path) -> tuple[FeatureSpec, TensorSplit]:
    data = load_frappe_synth(folder)
    spec = FeatureSpec.fit(data.train, data.fields, label=data.label)
    return spec, TensorSplit.from_frame("train", spec, data.train)


def _rows(batches) -> np.ndarray:
    """Every yielded row as one int matrix: the packed sparse ids, then the label."""
    parts = [torch.cat([inputs["sparse"], labels.long().unsqueeze(1)], dim=1) for inputs, labels in batches]
    return torch.cat(parts).numpy()


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def test_generated_data_has_frappes_shape_and_is_seeded(synth: Path, tmp_path: Path) -> None:
    frame = pd.read_parquet(synth / "train.parquet")
    assert list(frame.columns) == ["label", *FIELDS] and len(frame) == 2500
    assert all(dtype == np.int64 for dtype in frame.dtypes)
    start = 0
    for name in FIELDS:  # global ids, one consecutive range per field, as in Frappe x1
        assert frame[name].between(start, start + FIELD_SIZES[name] - 1).all(), name
        start += FIELD_SIZES[name]
    assert 0.15 < frame.label.mean() < 0.6
    assert [g.rows for g in row_groups(synth / "train.parquet")] == [300] * 8 + [100]
    again = generate(tmp_path, rows=2500, seed=7, eval_rows=400, chunk_rows=300)
    pd.testing.assert_frame_equal(pd.read_parquet(again / "train.parquet"), frame)
    other = generate(tmp_path / "other", rows=2500, seed=8, eval_rows=400, chunk_rows=300)
    assert not pd.read_parquet(other / "train.parquet").equals(frame)


def test_streamed_spec_equals_the_in_memory_fit(synth: Path) -> None:
    spec, _ = _in_memory(synth)
    data = load_frappe_synth(synth, stream=True)
    assert data.train.empty and data.train_stream == synth / "train.parquet"
    assert fit_spec_streaming(data.train_stream, data.fields, data.label).hash == spec.hash


NUMERIC_FIELDS = [
    FieldConfig("user", "id", owner="user"),
    FieldConfig("genre", "categorical", owner="item"),
    FieldConfig("plays", "numeric", owner="item", numeric_mode="quantile", n_buckets=8),
    FieldConfig("count", "numeric", owner="item", numeric_mode="quantile", n_buckets=10),  # heavy ties
    FieldConfig("width", "numeric", owner="item", source="plays", numeric_mode="equal_width", n_buckets=6),
    FieldConfig("logged", "numeric", owner="item", source="signed", numeric_mode="log", n_buckets=5),
]


def _numeric_frame(rows: int) -> pd.DataFrame:
    frame = make_mixed_frame(rows, 11)[["label", "user", "genre", "plays"]]
    rng = np.random.default_rng(12)
    frame["count"] = rng.poisson(3.0, rows).astype(float)
    frame["signed"] = rng.standard_t(2, rows) * 100
    frame.loc[rng.random(rows) < 0.05, "plays"] = np.nan  # missing values are not fit on, either way
    return frame


def test_streamed_spec_with_numeric_fields_equals_the_in_memory_fit(tmp_path: Path) -> None:
    """Quantile, equal-width and log buckets from the counts of each distinct value: the same edges, the same
    spec hash; a scaled field's mean and std within float rounding."""
    frame = _numeric_frame(5003)
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=700)
    assert len(row_groups(path)) == 8
    streamed = fit_spec_streaming(path, NUMERIC_FIELDS)
    in_memory = FeatureSpec.fit(frame, NUMERIC_FIELDS)
    assert streamed.hash == in_memory.hash
    fields = {f.name: f for f in in_memory.fields}
    assert len(fields["plays"].edges) == 7 and len(fields["count"].edges) < 9  # ties merge
    np.testing.assert_array_equal(streamed.encode_packed(frame)["sparse"], in_memory.encode_packed(frame)["sparse"])

    scaled = [FieldConfig("plays", "numeric", numeric_mode="scale"), FieldConfig("signed", "numeric",
              numeric_mode="scale")]  # fmt: skip
    a, b = fit_spec_streaming(path, scaled), FeatureSpec.fit(frame, scaled)
    for fa, fb in zip(a.fields, b.fields, strict=True):
        assert fa.mean == pytest.approx(fb.mean, rel=1e-12) and fa.std == pytest.approx(fb.std, rel=1e-12)
        assert fb.std > 1


def test_one_rank_in_order_yields_the_in_memory_rows(synth: Path) -> None:
    spec, memory = _in_memory(synth)
    stream = StreamingSplit.open("train", spec, synth / "train.parquet")
    assert len(stream) == len(memory) == 2500
    batches = list(stream.batches(256))
    assert [len(labels) for _, labels in batches] == [256] * 9 + [196]  # carried across row groups
    assert np.array_equal(_rows(batches), _rows(memory.batches(256)))


def test_shuffled_epoch_yields_the_same_rows_as_a_multiset(synth: Path) -> None:
    spec, memory = _in_memory(synth)
    stream = StreamingSplit.open("train", spec, synth / "train.parquet")
    generator = torch.Generator().manual_seed(3)
    first, second = _rows(stream.batches(256, generator)), _rows(stream.batches(256, generator))
    in_order = _rows(memory.batches(256))
    assert not np.array_equal(first, in_order) and not np.array_equal(first, second)  # shuffled, anew each epoch
    assert np.array_equal(_sorted(first), _sorted(in_order))
    assert np.array_equal(_sorted(second), _sorted(in_order))


def test_two_ranks_read_disjoint_row_groups_covering_all(synth: Path) -> None:
    spec, memory = _in_memory(synth)
    stream = StreamingSplit.open("train", spec, synth / "train.parquet")
    ranks = [Dist(rank=r, world_size=2).shard(stream) for r in range(2)]
    groups = [[g.index for g in rank.groups] for rank in ranks]
    assert groups == [[0, 2, 4, 6, 8], [1, 3, 5, 7]]  # disjoint, and together every row group
    assert len(ranks[0]) == len(ranks[1]) == 1200  # rank 0 holds 1,300 rows: cut to rank 1's, so equal steps
    whole = _rows(memory.batches(300))
    of_groups = {i: whole[i * 300 : (i + 1) * 300] for i in range(9)}
    for rank, indexes in zip(ranks, groups, strict=True):
        read = _rows(rank.batches(128))  # in order: exactly its own groups' rows, up to the cut
        assert np.array_equal(read, np.concatenate([of_groups[i] for i in indexes])[:1200])
        shuffled = _rows(rank.batches(128, torch.Generator().manual_seed(0)))
        mine = {tuple(row) for i in indexes for row in of_groups[i]}
        assert len(shuffled) == 1200 and all(tuple(row) in mine for row in shuffled)


def test_streaming_refuses_what_it_cannot_do(synth: Path, tmp_path: Path) -> None:
    spec, _ = _in_memory(synth)
    with pytest.raises(ValueError, match="row groups cannot feed"):
        StreamingSplit.open("train", spec, synth / "train.parquet").shard(0, 10)
    with pytest.raises(SpecError, match="id, categorical and numeric fields only"):
        fit_spec_streaming(synth / "train.parquet", [FieldConfig("user", "token_list")])
    with pytest.raises(SpecError, match="unknown column"):
        fit_spec_streaming(synth / "train.parquet", [FieldConfig("genre", "categorical")])
    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(synth / "train.parquet").slice(0, 0), empty)
    with pytest.raises(SpecError, match="empty"):
        StreamingSplit.open("train", spec, empty)
    assert run_benchmark(["--dataset", "frappe", "--models", "FM", "--stream", "--out", str(tmp_path / "x")]) == 2


def _stream_run(command: list[str], data: Path, out: Path) -> pd.DataFrame:
    args = ["--dataset", "frappe-synth", "--data-root", str(data), "--models", "FM", "--seeds", "1", "--stream"]
    args += ["--epochs", "3", "--threads", "1", "--no-progress", "--set", "train.batch_size=512", "--out", str(out)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*command, "training/run_benchmark.py", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_csv(out / "results.csv")


@pytest.fixture(scope="module")
def learnable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("learn"), rows=30_000, seed=1, eval_rows=5000, chunk_rows=4000)


def test_a_streamed_run_learns_the_planted_signal(learnable: Path, tmp_path: Path) -> None:
    results = _stream_run([sys.executable], learnable, tmp_path / "out")
    test = results[results.split == "test"].iloc[0]
    assert test.variant == "stream" and test.auc > 0.6, test.to_dict()


@pytest.mark.slow
def test_a_two_rank_streamed_run_learns(learnable: Path, tmp_path: Path) -> None:
    """torchrun, 2 ranks (gloo): each reads its own row groups; rank 0 alone writes the results."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed (it comes with torch)")
    results = _stream_run([str(torchrun), "--standalone", "--nproc_per_node=2"], learnable, tmp_path / "out")
    assert sorted(results.split) == ["test", "valid"]
    assert results[results.split == "test"].auc.iloc[0] > 0.6
