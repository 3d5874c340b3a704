"""Feature spec: fit on train only, encode deterministically, fail loudly on bad columns and values."""

import json

import numpy as np
import pandas as pd
import pytest

from encore.errors import SpecError
from encore.schema import FIRST_VOCAB, OOV, PAD, FeatureSpec, FieldConfig
from tests.factories import MIXED_FIELDS, make_mixed_frame


def frame(**cols):
    return pd.DataFrame(cols)


def test_vocabulary_is_fit_on_train_only_and_unseen_values_map_to_oov():
    train = frame(label=[1, 0, 1, 0], genre=["rock", "jazz", "rock", "pop"])
    spec = FeatureSpec.fit(train, [FieldConfig("genre", "categorical")])
    assert spec["genre"].vocab == ["rock", "jazz", "pop"]  # most frequent first, ties by value
    enc = spec.encode(frame(genre=["rock", "metal", None, "pop"]))["genre"]
    assert enc.tolist() == [FIRST_VOCAB, OOV, OOV, FIRST_VOCAB + 2]


def test_min_count_sends_rare_values_to_oov():
    train = frame(label=[0] * 5, artist=["a", "a", "b", "c", "c"])
    spec = FeatureSpec.fit(train, [FieldConfig("artist", "id", min_count=2)])
    assert spec.encode(frame(artist=["a", "b", "c"]))["artist"].tolist() == [FIRST_VOCAB, OOV, FIRST_VOCAB + 1]


def test_integer_ids_and_their_string_form_encode_the_same():
    spec = FeatureSpec.fit(frame(label=[0, 1], user=[17, 4]), [FieldConfig("user", "id")])
    ints = spec.encode(frame(user=[4, 17]))["user"]
    strs = spec.encode(frame(user=["4", "17"]))["user"]
    floats = spec.encode(frame(user=[4.0, 17.0]))["user"]
    assert ints.tolist() == strs.tolist() == floats.tolist() != [OOV, OOV]


@pytest.mark.parametrize("mode", ["quantile", "equal_width", "log"])
def test_numeric_buckets_are_monotone_and_missing_is_oov(mode):
    train = frame(label=[0] * 100, plays=np.arange(100.0) ** 2)
    spec = FeatureSpec.fit(train, [FieldConfig("plays", "numeric", numeric_mode=mode, n_buckets=5)])
    assert len(spec["plays"].edges) == 4
    enc = spec.encode(frame(plays=[0.0, 50.0, 2500.0, 9801.0, 1e9, np.nan]))["plays"]
    assert (np.diff(enc[:5]) >= 0).all() and enc[0] >= FIRST_VOCAB and enc[4] < spec["plays"].num_embeddings
    assert enc[5] == OOV


def test_scaled_numeric_uses_training_mean_and_std():
    spec = FeatureSpec.fit(
        frame(label=[0, 0, 0], x=[1.0, 2.0, 3.0]), [FieldConfig("x", "numeric", numeric_mode="scale")]
    )
    enc = spec.encode(frame(x=[2.0, 2.0 + np.std([1.0, 2.0, 3.0])]))["x"]
    np.testing.assert_allclose(enc, [0.0, 1.0], atol=1e-6)


def test_non_numeric_value_in_numeric_field_fails_with_row_and_value():
    spec = FeatureSpec.fit(frame(label=[0, 1], x=[1.0, 2.0]), [FieldConfig("x", "numeric")])
    with pytest.raises(SpecError, match=r"non-numeric value 'abc' \(row 1\)"):
        spec.encode(frame(x=["3", "abc"]))


def test_token_lists_pad_truncate_and_oov():
    train = frame(label=[0, 1], tags=["rock|indie", "indie|folk|live"])
    spec = FeatureSpec.fit(train, [FieldConfig("tags", "token_list", max_len=2)])
    enc = spec.encode(frame(tags=["indie", "folk|unknown|rock", None]))["tags"]
    indie = FIRST_VOCAB + spec["tags"].vocab.index("indie")
    folk = FIRST_VOCAB + spec["tags"].vocab.index("folk")
    assert enc.tolist() == [[indie, PAD], [folk, OOV], [PAD, PAD]]


def test_dense_vectors_are_checked_for_dimension_and_finiteness():
    train = frame(label=[0, 1], audio=[np.ones(3), np.zeros(3)])
    spec = FeatureSpec.fit(train, [FieldConfig("audio", "dense", dim=3)])
    assert spec.encode(frame(audio=[[1, 2, 3]]))["audio"].dtype == np.float32
    with pytest.raises(SpecError, match="length 3"):
        spec.encode(frame(audio=[[1.0, 2.0]]))
    with pytest.raises(SpecError, match="non-finite"):
        spec.encode(frame(audio=[[1.0, np.nan, 2.0]]))


def test_unknown_column_lists_the_known_columns():
    train = frame(label=[0, 1], genre=["a", "b"])
    with pytest.raises(SpecError, match=r"unknown column\(s\) \['gnre'\]; the data has columns \['label', 'genre'\]"):
        FeatureSpec.fit(train, [FieldConfig("gnre", "categorical")])
    spec = FeatureSpec.fit(train, [FieldConfig("genre", "categorical")])
    with pytest.raises(SpecError, match="missing column"):
        spec.encode(frame(other=["a"]))


def test_labels_must_be_binary():
    spec = FeatureSpec.fit(frame(label=[0, 1], g=["a", "b"]), [FieldConfig("g", "categorical")])
    with pytest.raises(SpecError, match="must be 0 or 1"):
        spec.labels(frame(label=[0, 2], g=["a", "b"]))


def test_save_load_round_trip_keeps_hash_and_encoding_bit_for_bit(tmp_path, mixed_data_frames):
    train, valid = mixed_data_frames
    spec = FeatureSpec.fit(train, MIXED_FIELDS)
    spec.save(tmp_path / "spec.json")
    loaded = FeatureSpec.load(tmp_path / "spec.json")
    assert loaded.hash == spec.hash
    a, b = spec.encode_packed(valid), loaded.encode_packed(valid)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes()
    # Row-at-a-time encoding (as a live request would be) equals the batch encoding.
    for i in (0, 7, 123):
        row = {k: [v] for k, v in valid.iloc[i].to_dict().items()}
        single = loaded.encode_packed(row)
        for key in a:
            assert single[key][0].tobytes() == a[key][i].tobytes()
    assert json.loads((tmp_path / "spec.json").read_text())["version"] == 1


@pytest.fixture
def mixed_data_frames():
    return make_mixed_frame(500, 1), make_mixed_frame(200, 2)
