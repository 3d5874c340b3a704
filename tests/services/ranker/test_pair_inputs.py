"""A spec with the (user, track) field `content_affinity`: the cached serving path (item rows gathered, user row
encoded once, pair fields encoded per request) gives the model exactly what the full encoder path and training's
frame give, and the cold panel puts its members' own value (0: no profile) in place of the listener's."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore.cold_calibration import ColdCalibration
from encore.ranker_frame import CONTENT_AFFINITY, PROFILE, PROFILE_N, build_frame, is_pair_field, training_frame
from encore.schema import FeatureSpec, FieldConfig
from encore.store import Store
from encore.track_table import TrackTable
from services.ranker.bundle import _panel_inputs
from services.ranker.cold import ColdScores
from services.ranker.encoded_items import ItemInputCache, SplitSpec
from services.ranker.pipeline import ItemFeatures
from tests.services.ranker.conftest import CONTENT_ONLY, EMBEDDING_DIM, SPEC_FIELDS, TrainedBundle
from tests.services.ranker.test_features import assert_same_arrays

AFFINITY = FieldConfig(CONTENT_AFFINITY, "numeric", owner="user", numeric_mode="scale")
FIELDS = [*SPEC_FIELDS, AFFINITY]


def _profile(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(EMBEDDING_DIM).astype(np.float32)


@pytest.fixture(scope="module")
def spec(trained_bundle: TrainedBundle) -> FeatureSpec:
    """A spec fit on training rows of which every other carries a profile as of the row."""
    frames = trained_bundle.frames
    rows = frames.interactions.head(600).copy()
    has = np.arange(len(rows)) % 2 == 0
    rows[PROFILE] = [_profile(i) if h else None for i, h in enumerate(has)]
    rows[PROFILE_N] = np.where(has, 3, 0)
    frame = training_frame(rows, frames.users, frames.meta, frames.content, FIELDS)
    assert frame[CONTENT_AFFINITY][~has].eq(0).all() and frame[CONTENT_AFFINITY][has].ne(0).all()
    return FeatureSpec.fit(frame, FIELDS)


def test_cached_path_equals_full_path_and_training_bit_for_bit(
    trained_bundle: TrainedBundle, store: Store, spec: FeatureSpec
) -> None:
    item_features = ItemFeatures(store)
    item_features.table = TrackTable(store)
    item_features.table.load([f"t{i}" for i in range(60)] + [CONTENT_ONLY])
    cache = ItemInputCache()
    assert cache.build(spec, item_features.table) is not None
    split = SplitSpec(spec)
    assert [f.name for f in split.pairs.spec.fields] == [CONTENT_AFFINITY]
    assert not any(is_pair_field(f) for f in split.items.fields + split.request.fields)

    track_ids = ["t3", "t59", "t12", "t3", "t40", CONTENT_ONLY, "t0"]
    frames = trained_bundle.frames
    index = spec.scaled_fields.index(next(f for f in spec.fields if f.name == CONTENT_AFFINITY))
    asked = (("u7", _profile(99), 4), ("u7", _profile(98), 5), ("u2", None, 0), ("nobody", _profile(1), 2))
    for user_id, profile, n in asked:  # u7 twice: the second from the per-user cache, with another profile
        items, _ = asyncio.run(item_features(track_ids))
        user = dict(store.get_users([user_id]).get(user_id) or {})
        if profile is not None:  # as the online read gives it: a list of float32 values, and the count
            user |= {PROFILE: profile.tolist(), PROFILE_N: n}
        packed = cache.packed(spec, user_id, user or None, items)
        assert packed is not None
        full = spec.encode_packed(build_frame(spec, user_id, user or None, items))
        assert_same_arrays(packed, full)
        rows = pd.DataFrame({fn.USER_ID: user_id, fn.TRACK_ID: track_ids, PROFILE: [profile] * len(track_ids),
                             PROFILE_N: n})  # fmt: skip
        trained = spec.encode_packed(training_frame(rows, frames.users, frames.meta, frames.content, FIELDS))
        assert_same_arrays(packed, trained)
        values = packed["numeric"][:, index]
        if profile is None:
            assert len(set(values.tolist())) == 1  # every candidate 0
        else:  # per candidate, not per user: the same track twice agrees, other tracks differ
            assert values[0] == values[3] and len(set(values.tolist())) == len(set(track_ids))


def test_the_cold_panel_gives_its_members_no_profile(trained_bundle: TrainedBundle, spec: FeatureSpec) -> None:
    """A panel member is a reference listener without events: their affinity to the cold track is 0, as for any
    listener without a profile; the listener's own value is swapped out with the other user inputs, so the panel's
    scores (cached per track) do not depend on who asks."""
    frames = trained_bundle.frames
    panel = frames.users.iloc[:8].to_dict("records")
    calibration = ColdCalibration.fit(np.linspace(0, 1, 50), np.linspace(0.2, 0.6, 50), panel, panel_weight=1.0)
    cold = ColdScores(spec, calibration, _panel_inputs(spec, panel))
    index = spec.scaled_fields.index(next(f for f in spec.fields if f.name == CONTENT_AFFINITY))
    assert index in cold.user_columns["numeric"]

    def packed_for(user_id: str, profile: np.ndarray) -> dict[str, np.ndarray]:
        rows = pd.DataFrame({fn.USER_ID: user_id, fn.TRACK_ID: ["t5"], PROFILE: [profile], PROFILE_N: 3})
        frame = training_frame(rows, frames.users, frames.meta, frames.content, FIELDS).assign(**{fn.TRACK_ID: None})
        return spec.encode_packed(frame)

    first, second = packed_for("u3", _profile(4)), packed_for("u9", _profile(5))
    assert first["numeric"][0, index] != second["numeric"][0, index]
    tiled = cold._with_panel_users(first, 0)
    field = next(f for f in spec.fields if f.name == CONTENT_AFFINITY)
    no_profile = FeatureSpec([field], label=None).encode({CONTENT_AFFINITY: pd.Series([0.0])})[CONTENT_AFFINITY][0]
    assert (tiled["numeric"][:, index] == no_profile).all()
    assert cold._item_key(first, 0) == cold._item_key(second, 0)  # one panel scoring per track
