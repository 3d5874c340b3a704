"""Codebooks: fit on standardized layers, tokenize, safe save/load, and refusal of foreign vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from encore.audio.codebooks import META_FILE, TENSORS_FILE, CodebookMismatch, Codebooks
from encore.audio.decode import decode_audio
from encore.audio.mfcc import MfccEncoder


def _info(n_layers: int, dim: int, revision: str = "1") -> dict:
    return {"backend": "test", "revision": revision, "sample_rate": 16_000, "window_seconds": 10.0,
            "n_layers": n_layers, "dim": dim, "params": {}, "pooling": "mean"}  # fmt: skip


def _clustered(n_per: int, n_layers: int = 2, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(4 * n_per, L, D) vectors in 4 tight clusters (shared by all layers) and their cluster labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, size=(4, n_layers, dim))
    labels = np.repeat(np.arange(4), n_per)
    return (centers[labels] + rng.normal(0, 0.1, size=(len(labels), n_layers, dim))).astype(np.float32), labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Token ids are arbitrary: compare the groupings they induce."""
    return all(len(set(b[a == t])) == 1 for t in np.unique(a)) and len(np.unique(a)) == len(np.unique(b))


def test_fit_recovers_clusters_and_tokenizes_unseen_tracks():
    train, labels = _clustered(20)
    books = Codebooks.fit(train, encoder_info=_info(2, 6), k=4, seed=0)
    tokens = books.tokenize(train)
    assert tokens.shape == (80, 2) and tokens.dtype == np.int64
    for field in range(2):
        assert _same_partition(tokens[:, field], labels)
    # New tracks near the same centres get the centres' tokens; a single (L, D) track works too.
    test, test_labels = _clustered(3, seed=0)  # same seed: same centres; other sizes: other noise
    assert _same_partition(books.tokenize(test)[:, 0], test_labels)
    np.testing.assert_array_equal(books.tokenize(train[5]), tokens[5:6])


def test_standardization_stops_one_loud_dimension_from_dominating():
    rng = np.random.default_rng(0)
    n = 200
    signal = np.repeat([-1.0, 1.0], n // 2)  # the real structure, in dimension 0
    quiet = rng.normal(0, 0.5, (n, 6))  # ordinary dimensions without structure
    x = np.column_stack([signal + rng.normal(0, 0.05, n), rng.normal(0, 1000.0, n), quiet])[:, None, :]
    books = Codebooks.fit(x.astype(np.float32), encoder_info=_info(1, 8), k=2)
    tokens = books.tokenize(x.astype(np.float32))[:, 0]
    # Without per-dimension scaling k-means would split on the 1000x-larger noise dimension instead.
    assert _same_partition(tokens, (signal > 0).astype(int))
    np.testing.assert_allclose(books.transform.scale, x[:, 0].std(axis=0), rtol=1e-4)


def test_groups_split_each_layer_into_fields():
    train, _ = _clustered(10, n_layers=3, dim=10)
    books = Codebooks.fit(train, encoder_info=_info(3, 10), k=4, groups=3)
    assert books.n_fields == 9 and books.tokenize(train).shape == (40, 9)
    assert [c.shape[1] for c in books.centroids[:3]] == [4, 3, 3]  # np.array_split of 10 dims
    assert books.tokenize(train).max() < 4


def test_embedding_helper():
    train, _ = _clustered(10, n_layers=3, dim=4)
    books = Codebooks.fit(train, encoder_info=_info(3, 4), k=4)
    z = books.transform.apply(train.reshape(len(train), -1)).reshape(train.shape)
    # standardized, then bounded: the catalog's own tracks stay unclipped
    np.testing.assert_allclose(z, (train - train.mean(0)) / train.std(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(books.embedding(train), z[:, -1], rtol=1e-5)
    np.testing.assert_allclose(books.embedding(train, layer=0), z[:, 0], rtol=1e-5)
    np.testing.assert_allclose(books.embedding(train, layer="mean"), z.mean(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(books.embedding(train, standardize=False), train[:, -1])


def test_fit_is_deterministic_and_validates_input():
    train, _ = _clustered(10)
    a = Codebooks.fit(train, encoder_info=_info(2, 6), k=4, seed=3)
    b = Codebooks.fit(train, encoder_info=_info(2, 6), k=4, seed=3)
    for ca, cb in zip(a.centroids, b.centroids, strict=True):
        np.testing.assert_array_equal(ca, cb)
    with pytest.raises(ValueError, match="k=64 centroids on 40 tracks"):
        Codebooks.fit(train, encoder_info=_info(2, 6), k=64)
    with pytest.raises(CodebookMismatch):
        Codebooks.fit(train, encoder_info=_info(2, 7), k=4)  # info disagrees with the vectors


def test_save_load_round_trip_and_tamper_detection(tmp_path):
    train, _ = _clustered(10)
    books = Codebooks.fit(train, encoder_info=_info(2, 6), k=4, groups=2)
    books.save(tmp_path / "cb")
    assert sorted(p.name for p in (tmp_path / "cb").iterdir()) == [META_FILE, TENSORS_FILE]  # no temp files
    loaded = Codebooks.load(tmp_path / "cb", encoder_info=_info(2, 6))
    np.testing.assert_array_equal(loaded.tokenize(train), books.tokenize(train))
    for name, array in books.transform.tensors().items():
        np.testing.assert_array_equal(loaded.transform.tensors()[name], array)
    meta = json.loads((tmp_path / "cb" / META_FILE).read_text())
    assert meta["encoder"]["revision"] == "1" and meta["k"] == 4 and meta["n_fields"] == 4
    # One flipped byte in the tensors is refused.
    raw = bytearray((tmp_path / "cb" / TENSORS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "cb" / TENSORS_FILE).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        Codebooks.load(tmp_path / "cb")


def test_refuses_vectors_from_another_encoder(tmp_path):
    train, _ = _clustered(10)
    Codebooks.fit(train, encoder_info=_info(2, 6), k=4).save(tmp_path)
    with pytest.raises(CodebookMismatch, match="revision"):
        Codebooks.load(tmp_path, encoder_info=_info(2, 6, revision="2"))
    books = Codebooks.load(tmp_path)
    with pytest.raises(CodebookMismatch, match="backend"):
        books.check_encoder(MfccEncoder().describe())
    with pytest.raises(CodebookMismatch, match=r"layers \[6, 6\]"):
        books.tokenize(np.zeros((3, 2, 7), np.float32))


def test_mfcc_codebooks_on_real_clips(audio_dir, audio_manifest, tmp_path):
    encoder = MfccEncoder()
    layers = np.stack(
        [encoder.encode_decoded(decode_audio((audio_dir / r["file"]).read_bytes(), max_seconds=20))
         for r in audio_manifest]
    )  # fmt: skip
    assert layers.shape == (12, 264)  # one layer, flat
    books = Codebooks.fit(layers, encoder_info=encoder.describe(), k=4, groups=8)
    tokens = books.tokenize(layers)
    assert tokens.shape == (12, 8) and tokens.min() >= 0 and tokens.max() < 4
    assert len({tuple(t) for t in tokens}) > 4  # the 12 clips are not collapsed onto a few codes
    books.save(tmp_path)
    np.testing.assert_array_equal(Codebooks.load(tmp_path, encoder.describe()).tokenize(layers), tokens)


def _ragged_info(widths: list[int]) -> dict:
    return {**_info(len(widths), widths[-1]), "layer_widths": widths}


def test_layers_of_different_widths_get_their_own_codebooks_and_bounds(tmp_path):
    # MusiCNN's layers are 561, 64, 64, 64 and 200 wide; here 9, 4 and 6, each with its own cluster structure.
    rng = np.random.default_rng(0)
    widths = [9, 4, 6]
    labels = rng.integers(0, 2, (3, 120))
    parts = [rng.normal(0, 0.1, (120, w)) + 3.0 * labels[i][:, None] * (i + 1) for i, w in enumerate(widths)]
    flat = np.concatenate(parts, axis=1).astype(np.float32)
    books = Codebooks.fit(flat, encoder_info=_ragged_info(widths), k=2, groups=2)
    assert books.n_fields == 6 and list(books.layout.widths) == widths
    assert [c.shape[1] for c in books.centroids] == [5, 4, 2, 2, 3, 3]  # each layer split in 2 blocks
    tokens = books.tokenize(flat)
    for layer in range(3):  # every layer's tokens follow that layer's own clusters
        assert _same_partition(tokens[:, 2 * layer], labels[layer])
    assert books.embedding(flat).shape == (120, 6) and books.dense_width() == 6 and books.dense_width(0) == 9
    with pytest.raises(CodebookMismatch, match="layer mean"):
        books.embedding(flat, layer="mean")
    # A far-out vector is bounded layer by layer: no layer's norm passes the largest a training item has.
    far = np.concatenate([np.full(w, 1e4 * (i + 1)) for i, w in enumerate(widths)]).astype(np.float32)
    z = books.standardize(far)
    norms = [np.linalg.norm(part) for part in books.layout.split(z)]
    np.testing.assert_array_less(np.array(norms), books.transform.max_norm + 1e-4)
    assert books.typicality(far)[0] == 0.0 and books.typicality(flat).mean() > 0.4
    books.save(tmp_path)
    loaded = Codebooks.load(tmp_path, encoder_info=_ragged_info(widths))
    np.testing.assert_array_equal(loaded.tokenize(flat), tokens)
    with pytest.raises(CodebookMismatch, match="layer_widths"):
        Codebooks.load(tmp_path, encoder_info=_ragged_info([9, 5, 5]))
    with pytest.raises(CodebookMismatch):
        books.tokenize(flat[:, :-1])


def test_only_the_chosen_layers_are_tokenized_and_the_choice_is_saved(tmp_path):
    """The token ablation's layer choice: fields only for the picked layers, the same tokens those layers get in
    an all-layer fit, and a saved description that makes a loader (serving) tokenize the same layers."""
    rng = np.random.default_rng(3)
    widths = [7, 5, 4, 6]
    info = {**_info(4, 0), "dim": None, "n_layers": None, "layer_widths": widths}
    train = rng.normal(0, 1, (120, sum(widths))).astype(np.float32)
    every = Codebooks.fit(train, encoder_info=info, k=8, seed=1)
    last = Codebooks.fit(train, encoder_info=info, k=8, seed=1, tokenize_layers="last1")
    picked = Codebooks.fit(train, encoder_info=info, k=8, seed=1, tokenize_layers="0,-1")
    assert (every.n_fields, last.n_fields, picked.n_fields) == (4, 1, 2)
    assert last.tokenized == (3,) and picked.tokenized == (0, 3)
    np.testing.assert_array_equal(last.tokenize(train)[:, 0], every.tokenize(train)[:, 3])
    np.testing.assert_array_equal(picked.tokenize(train), every.tokenize(train)[:, [0, 3]])
    np.testing.assert_array_equal(Codebooks.fit(train, encoder_info=info, k=8, seed=1, tokenize_layers="last3")
                                  .tokenize(train), every.tokenize(train)[:, 1:])  # fmt: skip

    last.save(tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text())["tokenized_layers"] == [3]
    again = Codebooks.load(tmp_path, encoder_info=info)
    assert again.tokenized == (3,)
    np.testing.assert_array_equal(again.tokenize(train), last.tokenize(train))
    for bad in ("last5", "last0", "4", "1,1", "first2", ""):
        with pytest.raises(ValueError):
            Codebooks.fit(train, encoder_info=info, k=8, tokenize_layers=bad)


def test_codebooks_saved_before_layers_could_be_chosen_still_tokenize_every_layer(tmp_path):
    train, _ = _clustered(10)
    books = Codebooks.fit(train, encoder_info=_info(2, 6), k=4)
    books.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["tokenized_layers"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    again = Codebooks.load(tmp_path)
    assert again.tokenized == (0, 1)
    np.testing.assert_array_equal(again.tokenize(train), books.tokenize(train))
