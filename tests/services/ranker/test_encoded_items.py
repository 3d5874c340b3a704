"""The pre-encoded item inputs give the model exactly what training's encoder gives, and stay correct when
the table grows, reloads or a new bundle arrives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from encore.artifacts import load_bundle
from encore.settings import RankerSettings
from encore.store import Store
from encore.track_snapshot import write_track_snapshot
from encore.track_table import TrackTable
from services.ranker.bundle import load_ranker_model
from services.ranker.encoded_items import ItemInputCache
from services.ranker.inputs_ahead import encode_ahead
from services.ranker.pipeline import ItemFeatures
from tests.services.ranker.conftest import CONTENT_ONLY, TrainedBundle
from tests.services.ranker.test_features import assert_same_arrays


def _setup(bundle: TrainedBundle, store: Store, track_ids: list[str]):
    model = load_ranker_model(load_bundle(bundle.artifacts_dir / bundle.bundle_id))
    item_features = ItemFeatures(store)
    item_features.table = TrackTable(store)
    item_features.table.load(track_ids)  # part of the catalog: the rest arrives as "new" tracks
    return model, item_features, ItemInputCache()


def test_gathered_inputs_equal_training_encoding(trained_bundle: TrainedBundle, store: Store) -> None:
    model, item_features, cache = _setup(trained_bundle, store, [f"t{i}" for i in range(60)])
    assert cache.build(model.spec, item_features.table) is not None
    track_ids = ["t3", "t59", "t12", "t3", "t40", "t0"]
    for user_id in ("u7", "u7", "nobody"):  # the second u7 comes from the per-user cache
        items, _ = asyncio.run(item_features(track_ids))
        user = store.get_users([user_id]).get(user_id)
        packed = cache.packed(model.spec, user_id, user, items)
        assert packed is not None
        expected = trained_bundle.spec.encode_packed(trained_bundle.frame_for(user_id, track_ids))
        assert_same_arrays(packed, expected)


def test_new_rows_bundles_and_unknown_ids_fall_back_then_get_covered(
    trained_bundle: TrainedBundle, store: Store
) -> None:
    model, item_features, cache = _setup(trained_bundle, store, [f"t{i}" for i in range(60)])
    cache.build(model.spec, item_features.table)
    user = store.get_users(["u2"])["u2"]

    # t70 and the content-only upload are read from the store on first sight and appended to the table
    fresh = ["t70", CONTENT_ONLY, "t1"]
    items, _ = asyncio.run(item_features(fresh))
    assert items.rows is not None and int(items.rows.max()) >= cache.encoded.n_rows
    assert cache.packed(model.spec, "u2", user, items) is None  # not covered yet: the full path serves it
    grown = cache.build(model.spec, item_features.table)  # what the background rebuild does: encodes only the new rows
    assert grown is not None and grown.n_rows == len(item_features.table)
    assert_same_arrays(
        cache.packed(model.spec, "u2", user, items),
        trained_bundle.spec.encode_packed(trained_bundle.frame_for("u2", fresh)),
    )

    # a reloaded table (new generation) and a new bundle (new spec object) are not served from old rows
    item_features.table.load([f"t{i}" for i in range(10, 20)])
    items, _ = asyncio.run(item_features(["t11", "t12"]))
    assert cache.packed(model.spec, "u2", user, items) is None
    cache.build(model.spec, item_features.table)
    other = load_ranker_model(load_bundle(trained_bundle.artifacts_dir / trained_bundle.bundle_id))
    assert cache.packed(other.spec, "u2", user, items) is None
    cache.build(other.spec, item_features.table)
    packed = cache.packed(other.spec, "u2", user, items)
    assert packed is not None
    assert_same_arrays(packed, trained_bundle.spec.encode_packed(trained_bundle.frame_for("u2", ["t11", "t12"])))

    # a candidate the store does not know: no rows to gather, the full path handles it
    items, _ = asyncio.run(item_features(["t11", "nowhere"]))
    assert items.rows is None and cache.packed(other.spec, "u2", user, items) is None
    np.testing.assert_array_equal(items.valid["track_meta"], [True, False])


def _mapping(values: np.ndarray) -> np.memmap | None:
    """The file mapping under an array (the cache hands out plain ndarray views of its np.memmap files)."""
    base = values
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    return base


def test_workers_share_one_memory_mapped_copy(trained_bundle: TrainedBundle, store: Store, tmp_path) -> None:
    """Two caches over equal tables (two workers) map the same files, holding what a private build holds."""
    ids = [f"t{i}" for i in range(60)]
    model, item_features, private = _setup(trained_bundle, store, ids)
    expected = private.build(model.spec, item_features.table).arrays
    workers = []
    for _ in range(2):
        _, features, _ = _setup(trained_bundle, store, ids)
        workers.append((features, ItemInputCache(tmp_path / "items")))
    built = [cache.build(model.spec, features.table) for features, cache in workers]
    for name, values in expected.items():
        first, second = (encoded.blocks[0][name] for encoded in built)
        assert _mapping(first) is not None and _mapping(first).filename == _mapping(second).filename
        np.testing.assert_array_equal(first, values)
    (folder,) = [p for p in (tmp_path / "items").iterdir() if p.is_dir()]
    assert sorted(p.stem for p in folder.glob("*.npy")) == sorted(expected)

    # a pushed track is appended as a private block; gathered inputs still equal training's encoding
    features, cache = workers[0]
    items, _ = asyncio.run(features(["t70", "t3"]))
    grown = cache.build(model.spec, features.table)
    assert grown is not None and len(grown.blocks) == 2 and _mapping(grown.blocks[0]["track_id"]) is not None
    user = store.get_users(["u1"])["u1"]
    assert_same_arrays(
        cache.packed(model.spec, "u1", user, items),
        trained_bundle.spec.encode_packed(trained_bundle.frame_for("u1", ["t70", "t3"])),
    )


def test_empty_item_cache_dir_setting_means_per_worker(monkeypatch) -> None:
    from encore.settings import RankerSettings

    assert RankerSettings().item_cache_path.name.startswith("encore-ranker-items-")  # auto
    monkeypatch.setenv("ENCORE_RANKER_ITEM_CACHE_DIR", "")
    assert RankerSettings().item_cache_path is None
    monkeypatch.setenv("ENCORE_RANKER_ITEM_CACHE_DIR", "/srv/items")
    assert str(RankerSettings().item_cache_path) == "/srv/items"


def test_inputs_encoded_ahead_are_mapped_at_start_not_encoded_again(
    trained_bundle: TrainedBundle, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bootstrap's encode_ahead writes what a starting ranker (same settings, same snapshot) maps."""
    settings = RankerSettings(track_snapshot_dir=str(tmp_path / "tracks"), item_cache_dir=str(tmp_path / "items"))
    write_track_snapshot(store, tmp_path / "tracks")
    assert encode_ahead(store, trained_bundle.artifacts_dir / trained_bundle.bundle_id, settings)

    model = load_ranker_model(load_bundle(trained_bundle.artifacts_dir / trained_bundle.bundle_id))
    item_features = ItemFeatures(store, snapshot_dir=tmp_path / "tracks")
    item_features.load()  # what the ranker's start-up does
    monkeypatch.setattr(ItemInputCache, "_encode", staticmethod(lambda *args: pytest.fail("encoded again")))
    cache = ItemInputCache(tmp_path / "items")
    assert cache.build(model.spec, item_features.table).n_rows == len(item_features.table)
    track_ids = ["t3", "t59", CONTENT_ONLY]
    items, _ = asyncio.run(item_features(track_ids))
    user = store.get_users(["u7"])["u7"]
    expected = trained_bundle.spec.encode_packed(trained_bundle.frame_for("u7", track_ids))
    assert_same_arrays(cache.packed(model.spec, "u7", user, items), expected)
