"""The generated world: deterministic from its seed, cached by checksum, and its audio carries the signal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from encore.audio import load_catalog
from encore.errors import EncoreError
from training.datasets.synthetic import (
    WorldParams,
    content_dir,
    generate_tables,
    load_world,
    params_hash,
    render_track,
    require_columns,
    world_params,
)

TINY = WorldParams(n_users=60, n_tracks=50, n_artists=8, mean_plays=12.0, audio_seconds=0.5)


def test_same_seed_same_world_and_different_seed_different_world():
    a, b, c = generate_tables(TINY), generate_tables(TINY), generate_tables(WorldParams(**{**TINY.__dict__, "seed": 7}))
    for x, y in zip(a[:3], b[:3], strict=True):
        pd.testing.assert_frame_equal(x, y)
    assert not a[2].equals(c[2])
    row = a[1].iloc[3]
    assert np.array_equal(render_track(row, TINY), render_track(row, TINY))
    assert params_hash(TINY) != params_hash(WorldParams(**{**TINY.__dict__, "seed": 7}))


def test_world_on_disk_is_complete_verified_and_reused(quick_world, world_root):
    doc = json.loads((quick_world.folder / "world.json").read_text())
    assert doc["complete"] and doc["counts"]["tracks"] == len(quick_world.tracks)
    assert len(doc["steps"]["audio"]["files"]) == len(quick_world.tracks)
    assert quick_world.folder.parent.parent == world_root
    stamp = (quick_world.folder / "plays.parquet").stat().st_mtime_ns
    again = load_world(world_params("quick"), world_root, progress=False)  # checksums match: not rebuilt
    assert (again.folder / "plays.parquet").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again.plays, quick_world.plays)
    # The plays carry the truth the oracle needs, and it is consistent with the stored latent model.
    p_label, _ = quick_world.truth(again.plays.user_id.to_numpy(), again.plays.track_id.to_numpy(), threshold=2)
    np.testing.assert_allclose(p_label, again.plays.p_click.to_numpy(), rtol=1e-9)


def test_a_corrupted_world_is_rebuilt(tmp_path):
    params = WorldParams(n_users=40, n_tracks=30, n_artists=5, mean_plays=10.0, audio_seconds=0.3)
    world = load_world(params, tmp_path, progress=False)
    (world.folder / "audio" / "000001.flac").write_bytes(b"garbage")
    rebuilt = load_world(params, tmp_path, progress=False)
    assert (rebuilt.folder / "audio" / "000001.flac").stat().st_size > 100


def test_the_audio_carries_the_planted_attributes(quick_world):
    """MFCC vectors of the rendered audio predict the planted attributes far better than chance."""
    ids, layers, manifest = load_catalog(content_dir(quick_world, "mfcc"))
    assert manifest["counts"]["encoded"] == len(quick_world.tracks)
    tracks = quick_world.tracks.set_index(quick_world.tracks.track_id.astype(str)).loc[ids]
    x = layers  # MFCC: one layer, flat
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    for column, chance in (("instrument", 0.25), ("density", 0.5), ("brightness", 0.5)):
        y = tracks[column].to_numpy()
        if column != "instrument":
            y = y > np.median(y)
        acc = cross_val_score(LogisticRegression(C=0.1, max_iter=300), x, y, cv=3).mean()
        assert acc > chance + 0.15, (column, acc)


def test_unknown_size_and_misnamed_columns_fail_clearly():
    with pytest.raises(EncoreError, match="unknown synthetic size 'huge'; known sizes: quick"):
        world_params("huge")
    frame = pd.DataFrame({"user_id": [1], "contry": ["US"]})
    known = r"missing column\(s\) \['country'\]; known columns are \['user_id', 'contry'\]"
    with pytest.raises(EncoreError, match=known):
        require_columns(frame, ["user_id", "country"], "users.parquet")
