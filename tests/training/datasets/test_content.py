"""Content arrays as item fields: validation errors, the missing-item policy, and train-only fitting."""

from __future__ import annotations

import numpy as np
import pytest

from encore.errors import EncoreError
from training.datasets.content import (
    DENSE_FIELD,
    MASK_FIELD,
    TOKEN_PREFIX,
    ContentArrays,
    build_item_content,
)

INFO = {"backend": "mfcc", "revision": "1", "n_layers": 1, "dim": 6, "sample_rate": 22050}


def arrays(n: int = 60, dim: int = 6, seed: int = 0, ids: list[str] | None = None) -> ContentArrays:
    layers = np.random.default_rng(seed).normal(size=(n, 1, dim)).astype(np.float32)
    return ContentArrays(ids or [str(i) for i in range(n)], layers, {**INFO, "dim": dim})


ITEMS = np.arange(60)
TRAIN = np.arange(40)


def test_dense_is_one_field_standardized_on_training_items():
    content = build_item_content(arrays(), "dense", ITEMS, TRAIN)
    assert [f.name for f in content.fields] == [DENSE_FIELD] and content.fields[0].dim == 6
    matrix = np.stack(content.table[DENSE_FIELD].to_numpy())
    np.testing.assert_allclose(matrix[:40].mean(0), 0, atol=1e-5)  # train items define the statistics


def test_codebooks_and_dense_statistics_ignore_non_training_items():
    base = arrays()
    changed = arrays()
    changed.layers[40:] += 100.0  # only items outside training change
    for mode in ("dense", "tokens"):
        a = build_item_content(base, mode, ITEMS, TRAIN, k=4)
        b = build_item_content(changed, mode, ITEMS, TRAIN, k=4)
        assert a.table.iloc[:40].equals(b.table.iloc[:40])
    books = build_item_content(base, "tokens", ITEMS, TRAIN, k=4).codebooks
    books2 = build_item_content(changed, "tokens", ITEMS, TRAIN, k=4).codebooks
    assert all(np.array_equal(x, y) for x, y in zip(books.centroids, books2.centroids, strict=True))


def test_tokens_are_categorical_item_fields_and_saved(tmp_path):
    content = build_item_content(arrays(), "tokens", ITEMS, TRAIN, k=4, out_dir=tmp_path / "books")
    names = [f.name for f in content.fields]
    assert names == [f"{TOKEN_PREFIX}{i}" for i in range(4)]  # one layer cut into 4 groups
    assert all(f.kind == "categorical" and f.owner == "item" for f in content.fields)
    assert (tmp_path / "books" / "codebooks.json").is_file()
    assert content.table[names].max().max() < 4


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda: ContentArrays([str(i) for i in range(60)], np.zeros((60, 1, 5), np.float32), INFO), "shape"),
        (lambda: arrays(ids=[str(i) for i in range(59)] + ["0"]), r"duplicate content keys: \['0'\]"),
        (lambda: arrays(n=50), "content missing for 10 of 60 items"),
    ],
    ids=["wrong-dimension", "duplicate-keys", "missing-items"],
)
def test_bad_content_fails_with_a_clear_message(bad, message):
    with pytest.raises(EncoreError, match=message):
        build_item_content(bad(), "dense", ITEMS, TRAIN)


def test_missing_items_with_zeros_policy_get_zero_vectors_and_a_mask():
    content = build_item_content(arrays(n=50), "dense", ITEMS, TRAIN, missing="zeros")
    assert [f.name for f in content.fields] == [DENSE_FIELD, MASK_FIELD]
    assert content.table[MASK_FIELD].tolist() == [0] * 50 + [1] * 10
    assert not np.stack(content.table[DENSE_FIELD].to_numpy()[50:]).any()
    tokens = build_item_content(arrays(n=50), "tokens", ITEMS, TRAIN, missing="zeros", k=4)
    assert tokens.table[f"{TOKEN_PREFIX}0"].iloc[50:].isna().all()  # -> OOV when encoded
    with pytest.raises(EncoreError, match="unknown missing-item policy"):
        build_item_content(arrays(n=50), "dense", ITEMS, TRAIN, missing="drop")
