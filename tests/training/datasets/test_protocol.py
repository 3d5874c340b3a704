"""Protocol invariants: splits, frozen negatives, cold items, and everything fit on training data only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from encore.schema import OOV, FeatureSpec
from training.datasets.protocol import ITEM, USER, ProtocolConfig, apply_protocol, kcore
from training.datasets.synthetic import feature_fields, load_synthetic

COLD = ProtocolConfig(cold_share=0.2)


@pytest.fixture(scope="module")
def cold_splits(quick_world, tmp_path_factory):
    return apply_protocol(quick_world.plays, COLD, tmp_path_factory.mktemp("split"), quick_world.generative_truth(2))


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame[USER].tolist(), frame[ITEM].tolist(), strict=True))


def _hashes(splits) -> dict[str, str]:
    return {path.rsplit("/", 1)[1]: digest for path, digest in splits.files.items()}


def test_frozen_negatives_are_deterministic_and_seeded(quick_world, tmp_path):
    first = apply_protocol(quick_world.plays, COLD, tmp_path / "a")
    again = apply_protocol(quick_world.plays, COLD, tmp_path / "b")
    other = apply_protocol(quick_world.plays, ProtocolConfig(cold_share=0.2, seed=1), tmp_path / "c")
    assert set(_hashes(first)) == {"valid.parquet", "test.parquet", "cold.parquet", "mixed.parquet"}
    assert _hashes(first) == _hashes(again)  # same seed: byte-identical frozen files
    assert _hashes(other)["test.parquet"] != _hashes(first)["test.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "test.parquet"), first.evals["test"])


def test_split_shares_labels_and_no_leak(quick_world, cold_splits):
    train = _pairs(cold_splits.train_positives)
    for name in ("valid", "test", "cold"):
        positives = cold_splits.evals[name]
        observed = positives.iloc[: len(positives) // 2]  # positives come first, then one negative each
        assert not _pairs(observed) & train, name
    n = {k: len(cold_splits.evals[k]) // 2 for k in ("valid", "test")}
    share = len(cold_splits.train_positives) / (len(cold_splits.train_positives) + n["valid"] + n["test"])
    assert 0.75 < share < 0.85
    labels = cold_splits.evals["test"].label.to_numpy()
    assert labels[len(labels) // 2 :].sum() == 0 and 0 < labels.mean() < 0.5


def test_eval_negatives_are_never_items_the_user_played(quick_world, cold_splits):
    played = _pairs(quick_world.plays)
    for name in ("valid", "test", "cold"):
        frame = cold_splits.evals[name]
        assert not _pairs(frame.iloc[len(frame) // 2 :]) & played, name  # the negative half
    cold = set(cold_splits.cold_items.tolist())
    assert set(cold_splits.evals["cold"][ITEM]) <= cold  # pure-cold: cold items only, negatives included
    assert not set(cold_splits.evals["test"][ITEM]) & cold


def test_cold_items_never_reach_training_and_encode_to_oov(quick_world, cold_splits):
    cold = set(cold_splits.cold_items.tolist())
    assert len(cold) == round(0.2 * quick_world.plays.track_id.nunique())
    assert not set(cold_splits.train_positives[ITEM]) & cold
    for epoch in (1, 2, 3):
        assert not set(cold_splits.sampler(epoch, 0)[ITEM]) & cold
    a, b = cold_splits.sampler(2, 0), cold_splits.sampler(2, 0)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(cold_splits.sampler(3, 0))  # fresh negatives every epoch
    rows = cold_splits.sampler(1, 0)
    spec = FeatureSpec.fit(rows, feature_fields("id"))
    encoded = spec.encode(cold_splits.evals["cold"])
    assert (encoded["track_id"] == OOV).all()


def test_oracle_auc_is_a_ceiling_above_chance(cold_splits):
    for name in ("valid", "test", "cold", "mixed"):
        assert 0.7 < cold_splits.oracle_auc[name] < 1.0, (name, cold_splits.oracle_auc)


def test_the_exact_oracle_is_cached_with_the_split_and_recomputed_when_stale(quick_world, tmp_path):
    """oracle.npz is keyed by each set's rows: a reload reads it, a cache for other rows is not used."""
    truth = quick_world.generative_truth(2)
    first = apply_protocol(quick_world.plays, COLD, tmp_path, truth)
    cache = tmp_path / "oracle.npz"
    with np.load(cache, allow_pickle=False) as npz:
        stored = {k: npz[k] for k in npz.files}
    np.savez(cache, **{**stored, "score_test": np.zeros_like(stored["score_test"])})
    again = apply_protocol(quick_world.plays, COLD, tmp_path, truth)
    assert (again.evals["test"]["oracle"] == 0).all()  # read from the cache, not recomputed
    np.savez(cache, **{**stored, "key_test": np.array("other rows")})
    fresh = apply_protocol(quick_world.plays, COLD, tmp_path, truth)
    np.testing.assert_array_equal(fresh.evals["test"]["oracle"], first.evals["test"]["oracle"])


def test_kcore_and_temporal_split(quick_world, tmp_path):
    core = kcore(quick_world.plays[[USER, ITEM]], 10)
    assert core.groupby(USER).size().min() >= 10 and core.groupby(ITEM).size().min() >= 10
    cfg = ProtocolConfig(split="temporal")
    splits = apply_protocol(quick_world.plays, cfg, tmp_path)
    stamps = quick_world.plays[[USER, ITEM, "timestamp"]]
    test = splits.evals["test"].iloc[: len(splits.evals["test"]) // 2].merge(stamps, on=[USER, ITEM])
    latest = splits.train_positives.groupby(USER)["timestamp"].max()
    test_ts = test.timestamp.to_numpy()
    assert (test_ts >= latest.loc[test[USER]].to_numpy()).all()


def test_loader_statistics_use_training_rows_only(quick_world, world_root):
    data = load_synthetic(world_root, "id+cat+num", "none", size="quick", protocol=COLD, progress=False)
    cold = data.extra_eval["cold"]
    assert cold.popularity.isna().all()  # no training plays: OOV bucket, not a count from test rows
    spec = FeatureSpec.fit(data.train, data.fields)
    assert (spec.encode(cold)["popularity"] == OOV).all()
    assert np.isfinite(data.train.popularity).all()
    assert set(data.oracle_auc) == {"valid", "test", "cold", "mixed"}
    assert {"test", "cold", "mixed"} <= set(data.eval_splits())


def test_training_negatives_exclude_only_training_rows_and_eval_negatives_every_play(quick_world, tmp_path):
    """The default fits on train only: a training negative may be a held-out play, never a training row.
    TASTE's rule (train_negatives="all") excludes every play, as the eval negatives always do."""
    played = _pairs(quick_world.plays)
    drawn = {}
    for rule in ("train", "all"):
        splits = apply_protocol(
            quick_world.plays, ProtocolConfig(cold_share=0.2, train_negatives=rule), tmp_path / rule
        )
        train = _pairs(splits.train_positives)
        negatives = set()
        for epoch in (1, 2, 3, 4):
            rows = splits.sampler(epoch, 0)
            negatives |= _pairs(rows.iloc[len(splits.train_positives) :])
        assert not negatives & train, rule
        drawn[rule] = (negatives, splits)
    negatives, splits = drawn["train"]
    assert negatives & played  # some held-out plays are drawn: nothing outside train decides the rows
    assert not drawn["all"][0] & played
    for name in ("valid", "test", "cold"):  # eval negatives: the full exclusion under either rule
        frame = splits.evals[name]
        assert not _pairs(frame.iloc[len(frame) // 2 :]) & played, name
    pd.testing.assert_frame_equal(splits.evals["test"], drawn["all"][1].evals["test"])
    assert ProtocolConfig(train_negatives="all").tag() == "random+trainneg-all" and ProtocolConfig().tag() == "random"
