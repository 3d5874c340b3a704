"""HetRec Last.fm 2K on the real data in ../shared/data: counts, protocol, content masks, no tag leaks, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encore.errors import EncoreError
from training.datasets import hetrec
from training.datasets.protocol import ITEM, USER, ProtocolConfig
from training.datasets.registry import get_dataset, load_dataset

ROOT = Path(__file__).resolve().parents[3]
DATA = hetrec.DATASET.data_root()
pytestmark = pytest.mark.skipif(
    not (DATA / hetrec.HETREC_DIR).is_dir() or not (DATA / hetrec.SPOTIFY_DIR).is_dir(),
    reason=f"real data not found: {DATA / hetrec.HETREC_DIR} and {DATA / hetrec.SPOTIFY_DIR} "
    "(set ENCORE_DATASETS_DIR or provide ../shared/data)",
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hetrec_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENCORE_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def full(cache_dir):
    return load_dataset(hetrec.NAME, DATA, "id+cat+num", "dense", progress=False)


def test_raw_counts_match_the_data_readme():
    plays = hetrec.load_plays(DATA)
    assert len(plays) == 92_834
    assert plays[USER].nunique() == 1_892 and plays[ITEM].nunique() == 17_632
    tags = hetrec.load_tag_assignments(DATA)
    assert len(tags) == 186_479 and (tags.tag != "").all()  # every tagID resolves (latin-1 tags.dat)
    spotify = hetrec.load_spotify(DATA)
    assert 4_000 < len(spotify) <= 4_602 and spotify[ITEM].is_unique
    assert np.isfinite(spotify[list(hetrec.SPOTIFY_AUDIO)].to_numpy()).all()


def test_protocol_invariants_on_real_data(full):
    plays = hetrec.load_plays(DATA)
    assert full.variant == "random+t250"
    pairs = plays.set_index([USER, ITEM])["num_repeat"]
    # Observed rows: the k-core (>= 5 rows per user and per item) and label = play count >= 250.
    evals_obs = [f.merge(plays, on=[USER, ITEM], how="inner") for f in (full.valid, full.test)]
    eval_pairs = pd.MultiIndex.from_frame(pd.concat(evals_obs)[[USER, ITEM]])
    train_keys = pd.MultiIndex.from_frame(full.train[[USER, ITEM]])
    # Training negatives are drawn against the user's training rows only (fit on train only), so a few are pairs
    # held out for valid or test; those are negatives here, not observed training rows.
    train_observed = train_keys.isin(pairs.index) & ~train_keys.isin(eval_pairs)
    train_obs = full.train[train_observed].merge(plays, on=[USER, ITEM], how="inner")
    rows = pd.concat([train_obs, *evals_obs], ignore_index=True)
    assert not rows.duplicated([USER, ITEM]).any()
    assert rows.groupby(USER).size().min() >= 5 and rows.groupby(ITEM).size().min() >= 5
    assert (rows.label == (rows.num_repeat >= hetrec.LABEL_THRESHOLD)).all()
    assert 0.3 < rows.label.mean() < 0.8  # a meaningful label, unlike num_repeat >= 2 (99% positive)
    # Negatives: one per observed row, label 0; never a training pair, and in valid/test never any played pair.
    assert train_observed.sum() == (~train_observed).sum() and (full.train.label[~train_observed] == 0).all()
    negatives = train_keys[~train_observed]
    assert not negatives.isin(pd.MultiIndex.from_frame(train_obs[[USER, ITEM]])).any()
    for frame in (full.valid, full.test):
        keys = pd.MultiIndex.from_frame(frame[[USER, ITEM]])
        seen = keys.isin(pairs.index)
        assert seen.sum() == (~seen).sum() and (frame.label[~seen] == 0).all()


def test_temporal_split_and_unknown_settings_fail_clearly(cache_dir):
    with pytest.raises(EncoreError, match="no listening timestamps"):
        load_dataset(hetrec.NAME, DATA, "id", "none", protocol=ProtocolConfig(split="temporal"))
    with pytest.raises(EncoreError, match="known: none, dense, tokens, text-dense, text-tokens"):
        get_dataset(hetrec.NAME).check_settings(["id"], ["audio"])
    with pytest.raises(EncoreError, match="known: id, id\\+cat, id\\+cat\\+num"):
        load_dataset(hetrec.NAME, DATA, "all", "none")
    with pytest.raises(EncoreError, match="does not take option"):
        load_dataset(hetrec.NAME, DATA, "id", "none", size="quick")
    assert hetrec.variant_of(ProtocolConfig(label_threshold=100, kcore=10)) == "random+t100+k10"


def test_spotify_mask_is_set_exactly_for_unlinked_artists(full):
    linked = set(hetrec.load_spotify(DATA)[ITEM])
    for frame in (full.train, full.valid, full.test):
        unlinked = ~frame[ITEM].isin(linked)
        assert (frame.audio_missing == unlinked.astype(int)).all()
        vectors = np.stack(frame.audio_emb.to_numpy())
        assert vectors.shape[1] == len(hetrec.SPOTIFY_AUDIO)
        assert (vectors[unlinked.to_numpy()] == 0).all() and np.abs(vectors[~unlinked.to_numpy()]).sum(1).min() > 0
    assert 0.1 < full.test.audio_missing.mean() < 0.9
    names = [f.name for f in full.fields]
    assert names[-2:] == ["audio_emb", "audio_missing"] and "spotify_popularity" in names


def test_mask_ablation_changes_every_frame_and_the_resampled_training_rows(full):
    from benchmarks.hetrec_mask_ablation import ablate

    mask_only = ablate(full, "dense-mask-only")
    for frame in (mask_only.train, mask_only.test, mask_only.train_sampler(1, 1)):
        assert not np.stack(frame.audio_emb.to_numpy()).any()  # no audio left, only the mask
        assert frame.audio_missing.mean() > 0.1
    assert (mask_only.test.audio_missing.to_numpy() == full.test.audio_missing.to_numpy()).all()
    assert mask_only.content == "dense-mask-only" and full.content == "dense"  # the original is untouched

    no_mask = ablate(full, "dense-no-mask")
    assert "audio_missing" not in [f.name for f in no_mask.fields]
    for frame in (no_mask.valid, no_mask.train_sampler(1, 1)):
        assert "audio_missing" not in frame and np.stack(frame.audio_emb.to_numpy()).any()


def test_held_out_tag_assignments_never_reach_item_or_user_features(full, cache_dir, monkeypatch):
    real = hetrec.load_tag_assignments(DATA)
    splits = next(v for k, v in hetrec._PROTOCOL_CACHE.items() if str(cache_dir) in k[1])
    held = hetrec.held_out_pairs(splits, hetrec.load_plays(DATA))
    assert len(held) == len(full.valid) // 2 + len(full.test) // 2
    # Tag every held-out (user, artist) pair many times with a new tag, and rename their existing tags.
    is_held = real.merge(held.assign(h=1), on=[USER, ITEM], how="left")["h"].notna().to_numpy()
    assert is_held.sum() > 0
    leaked = real.copy()
    leaked.loc[is_held, "tag"] = "leaktag"
    flood = pd.concat([held.assign(tag="leaktag")] * 50, ignore_index=True)
    monkeypatch.setattr(hetrec, "load_tag_assignments", lambda root: pd.concat([leaked, flood], ignore_index=True))
    data = load_dataset(hetrec.NAME, DATA, "id+cat+num", "dense", progress=False)
    for mine, ref in ((data.train, full.train), (data.valid, full.valid), (data.test, full.test)):
        for column in ("user_top_tag", "top_tag"):
            assert "leaktag" not in set(mine[column].dropna())
            pd.testing.assert_series_equal(mine[column], ref[column])
    allowed = hetrec.allowed_tags(pd.concat([leaked, flood], ignore_index=True), held)
    texts = hetrec.tag_texts(allowed)
    assert not texts.str.contains("leaktag").any()
    assert texts.equals(hetrec.tag_texts(hetrec.allowed_tags(real, held)))


def test_cli_tiny_grid_writes_results(cache_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "training" / "run_benchmark.py"), "--threads", "1", "--no-progress"]
    cmd += ["--dataset", hetrec.NAME, "--models", "LR", "--features", "id+cat", "--content", "none,dense"]
    cmd += ["--epochs", "1", "--seeds", "1", "--out", str(out)]
    env = {**os.environ, "ENCORE_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert set(results.content) == {"none", "dense"} and set(results.split) >= {"valid", "test"}
    assert set(results.variant) == {"random+t250"} and results.auc.between(0.5, 1.0).all()
