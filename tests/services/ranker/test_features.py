"""Serving encoding equals the bootstrap's, bit for bit, for the same (user, track) rows: the frame the model was
trained on, and the bootstrap's frame builder (training/bootstrap.py `ranker_frame`) for any other rows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from encore import feature_names as fn
from encore.artifacts import BundleError, load_bundle
from encore.errors import SpecError
from encore.ranker_frame import check_fields
from encore.schema import OOV, FieldSpec
from encore.store import Store
from services.ranker.bundle import load_ranker_model
from services.ranker.pipeline import ItemFeatures, Score
from tests.services.ranker.conftest import CONTENT_ONLY, NOT_IN_STORE, TrainedBundle


def ranker_packed(bundle: TrainedBundle, store: Store, user_id: str, track_ids: list[str]) -> dict[str, np.ndarray]:
    """What the ranker feeds the model: user row from the store, items from the TrackTable."""
    model = load_ranker_model(load_bundle(bundle.artifacts_dir / bundle.bundle_id))
    item_features = ItemFeatures(store)
    item_features.load()
    items, reason = asyncio.run(item_features(track_ids))
    assert reason is None
    user = store.get_users([user_id]).get(user_id)
    return Score().encode(model, user_id, user, items)


def assert_same_arrays(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        assert actual[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name, strict=True)


def test_ranker_encoding_equals_the_frame_the_model_was_trained_on(trained_bundle: TrainedBundle, store: Store) -> None:
    """The rows the bootstrap's frame builder gave the trainer, asked for again through the serving path."""
    train = trained_bundle.train_frame
    user_id = train[fn.USER_ID].value_counts().index[0]
    rows = train[train[fn.USER_ID] == user_id].head(8)
    assert len(rows) >= 5
    expected = trained_bundle.spec.encode_packed(rows.reset_index(drop=True))
    assert_same_arrays(ranker_packed(trained_bundle, store, user_id, rows[fn.TRACK_ID].tolist()), expected)


def test_ranker_encoding_equals_the_bootstrap_frame(trained_bundle: TrainedBundle, store: Store) -> None:
    # known tracks (in and out of the training rows), repeated ids, all with meta and content
    track_ids = ["t3", "t75", "t12", "t3", "t40", "t79", "t0"]
    expected = trained_bundle.spec.encode_packed(trained_bundle.frame_for("u7", track_ids))
    assert_same_arrays(ranker_packed(trained_bundle, store, "u7", track_ids), expected)


def test_missing_features_encode_like_training_left_joins(trained_bundle: TrainedBundle, store: Store) -> None:
    """An unknown user, a track without meta and a track the store lacks: OOV / zeros on both sides."""
    track_ids = ["t5", CONTENT_ONLY, NOT_IN_STORE, "t6"]
    expected = trained_bundle.spec.encode_packed(trained_bundle.frame_for("nobody", track_ids))
    actual = ranker_packed(trained_bundle, store, "nobody", track_ids)
    assert_same_arrays(actual, expected)
    spec = trained_bundle.spec
    user_cols = [i for i, f in enumerate(spec.sparse_fields) if f.owner == "user"]
    assert (actual["sparse"][:, user_cols] == OOV).all()
    genre = [f.name for f in spec.sparse_fields].index("genre")
    assert actual["sparse"][1, genre] == OOV and actual["sparse"][2, genre] == OOV
    assert (actual["audio_emb"][2] == 0).all() and (actual["audio_emb"][1] != 0).any()


def test_a_spec_field_without_a_store_source_is_refused() -> None:
    with pytest.raises(SpecError, match="mood"):
        check_fields([FieldSpec(name="mood", kind="categorical", owner="item", column="mood", vocab=["sad"])])


def test_a_bundle_whose_spec_does_not_match_its_hash_is_refused(trained_bundle: TrainedBundle, tmp_path) -> None:
    from tests.services.ranker.conftest import copy_bundle

    path = copy_bundle(trained_bundle.artifacts_dir / trained_bundle.bundle_id, tmp_path, "other-spec")
    manifest = load_bundle(path).manifest
    broken = {**manifest, "feature_spec_hash": "0" * 64}
    with pytest.raises(BundleError, match="hashes to"):
        load_ranker_model(type(load_bundle(path))(path, broken))
