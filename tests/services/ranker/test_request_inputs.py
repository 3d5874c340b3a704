"""The ranker's one-row user encoding (services/ranker/request_inputs.py) gives exactly what the spec encoder gives
for the same frame, for every kind of field and every type of value a profile can hold, memoized or not."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from encore.errors import SpecError
from encore.ranker_frame import TrackFeatures, build_frame
from encore.schema import FeatureSpec, FieldConfig
from services.ranker import request_inputs
from services.ranker.request_inputs import RequestInputs

CONFIGS = [
    FieldConfig("user_id", "id", "user"),
    FieldConfig("country", "categorical", "user"),
    FieldConfig("gender", "categorical", "user"),
    FieldConfig("age", "numeric", "user", numeric_mode="quantile", n_buckets=6),
    FieldConfig("age_cat", "categorical", "user", source="age"),  # a second field on the same column
    FieldConfig("n_plays", "numeric", "user", numeric_mode="scale"),
    FieldConfig("n_tracks", "numeric", "user", numeric_mode="log", n_buckets=5),
    FieldConfig("hour", "categorical", "context"),  # a request carries no context: always None
]
VALUES = {
    "country": ["SE", "XX", "", None, 5, 5.0, float("nan"), True, np.str_("SE"), np.int64(3)],
    "gender": ["f", "m", "unknown", None],
    "age": [0, 14, 20, 33, 80, -5, 2**62, 20.0, 19.999, 33.5, float("nan"), float("inf"), float("-inf"), None, True,
            np.int64(33), np.float32(40.5), np.float64(20.0), "33"],
    "n_plays": [0, 1, 299, 3000, -1, 2**62, 1e308, 12.75, float("nan"), float("inf"), None, False, np.int32(7), "12"],
    "n_tracks": [0, 3, 499, 10**9, 2.5, float("-inf"), None, np.uint8(4)],
}  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in rng.integers(0, 50, n)],
            "country": rng.choice(["SE", "BR", "US", "5"], n),
            "gender": rng.choice(["f", "m", "n"], n),
            "age": rng.integers(14, 80, n),
            "n_plays": rng.integers(0, 3000, n),
            "n_tracks": rng.integers(0, 500, n),
            "hour": rng.integers(0, 24, n),
        }
    )
    return FeatureSpec.fit(frame, CONFIGS, label=None)


def spec_encoding(spec: FeatureSpec, user_id: str, user: dict | None) -> dict[str, np.ndarray]:
    return spec.encode(build_frame(spec, user_id, user, TrackFeatures.unknown(["?"])))


def assert_identical(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], what: object) -> None:
    assert list(actual) == list(expected), what
    for name, value in expected.items():
        got = actual[name]
        assert (got.dtype, got.shape) == (value.dtype, value.shape), (what, name)
        assert got.tobytes() == value.tobytes(), (what, name, got, value)  # bit for bit: NaN and -0.0 included


def profiles(spec: FeatureSpec) -> list[dict]:
    """Each value of each column at least once, in rows mixing the columns' values; and the bucket edges exactly."""
    edges = [
        {column: value}
        for column in ("age", "n_tracks")
        for edge in spec[column].edges
        for value in (edge, int(edge), np.nextafter(edge, -np.inf).item())
    ]
    columns = list(VALUES)
    longest = max(len(v) for v in VALUES.values())
    rows = [{c: VALUES[c][i % len(VALUES[c])] for c in columns} for i in range(longest)]
    rows += [{c: VALUES[c][(i * 7 + j) % len(VALUES[c])] for j, c in enumerate(columns)} for i in range(longest)]
    return rows + edges + [{}, {"country": "SE"}]  # fields missing from the profile read as None


def test_every_value_type_encodes_as_the_spec_encoder_does(spec: FeatureSpec) -> None:
    inputs = RequestInputs(spec)
    cases = itertools.product(["u3", "nobody", ""], [*profiles(spec), None])
    for user_id, user in cases:
        try:
            expected = spec_encoding(spec, user_id, user)
        except SpecError:  # a non-numeric string in a numeric field: refused the same way
            with pytest.raises(SpecError):
                inputs.encode(user_id, user)
            continue
        assert_identical(inputs.encode(user_id, user), expected, (user_id, user))
        assert_identical(inputs.encode(user_id, user), expected, ("again, from the memo", user_id, user))
    assert any(inputs.memo.values()), "values the fast rules do not cover went through the spec encoder"


def test_a_full_memo_starts_over_and_stays_correct(spec: FeatureSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(request_inputs, "MEMO_SIZE", 2)
    inputs = RequestInputs(spec)
    for value in [True, False, np.int64(3), np.int64(4), np.float32(1.5), True]:
        user = {"age": value, "country": value, "n_plays": value}
        assert_identical(inputs.encode("u1", user), spec_encoding(spec, "u1", user), value)
        assert all(len(memo) <= 2 for memo in inputs.memo.values())
