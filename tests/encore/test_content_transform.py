"""The one content transform: catalog tracks keep their standardized values, far-out input is bounded."""

from __future__ import annotations

import numpy as np
import pytest

from encore.audio.transform import MAX_ABS_CONTENT, N_QUANTILES, STD_FLOOR, ContentTransform


def _catalog(n: int = 300, dim: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, (n, dim)) * rng.uniform(0.5, 5, dim) + rng.normal(0, 10, dim)).astype(np.float32)


def test_catalog_tracks_are_only_standardized():
    x = _catalog()
    transform = ContentTransform.fit(x)
    np.testing.assert_allclose(transform.apply(x), (x - x.mean(0)) / x.std(0), rtol=1e-4, atol=1e-4)
    typical = transform.typicality(x)
    assert typical.min() >= 0 and typical.max() <= 1
    assert 0.4 < np.median(typical) < 0.6  # a training track is as typical as the catalog's median track


def test_far_out_input_stays_inside_the_training_envelope():
    x = _catalog()
    transform = ContentTransform.fit(x)
    far = x[:20] * 300 - 1e4  # real music against a rendered catalog: |z| in the hundreds
    bounded = transform.apply(far)
    assert (bounded >= transform.low - 1e-6).all() and (bounded <= transform.high + 1e-6).all()
    assert (np.linalg.norm(bounded, axis=-1) <= transform.max_norm + 1e-4).all()
    assert (transform.typicality(far) == 0).all()
    assert np.abs(transform.standardize(far)).max() > 100  # what the models saw before the bound
    assert np.abs(bounded).max() <= MAX_ABS_CONTENT


def test_a_near_constant_dimension_cannot_blow_up():
    x = _catalog()
    x[:, 3] = 7.0 + np.random.default_rng(1).normal(0, 1e-6, len(x))  # barely varies across the catalog
    transform = ContentTransform.fit(x)
    assert transform.scale[3] == pytest.approx(STD_FLOOR * np.median(x.std(0)), rel=1e-3)
    upload = x[0].copy()
    upload[3] = 8.0  # an ordinary difference on real music
    assert np.abs(transform.standardize(upload)[0, 3]) < 1 / STD_FLOOR


def test_per_layer_shapes_round_trip_and_refuse_bad_arrays():
    # Two layers of different widths and scales, flat: each gets its own std floor and norm bound.
    x = np.concatenate([_catalog(seed=0), _catalog(seed=1)[:, :25] * 50], axis=1)  # (N, 40 + 25)
    transform = ContentTransform.fit(x, widths=(40, 25))
    assert transform.shape == (65,) and transform.max_norm.shape == (2,) and transform.widths.tolist() == [40, 25]
    assert transform.max_norm[0] < transform.max_norm[1] * 2  # norms of standardized values: comparable scales
    with pytest.raises(ValueError, match="60 values"):
        ContentTransform.fit(x, widths=(40, 20))
    again = ContentTransform.from_tensors(transform.tensors())
    np.testing.assert_array_equal(again.apply(x[:5]), transform.apply(x[:5]))
    np.testing.assert_array_equal(transform.apply(x[0]), transform.apply(x[:1]))  # one item or a batch
    with pytest.raises(ValueError, match="shape"):
        transform.apply(x[:, 0])
    bad = transform.tensors() | {"transform.low": transform.high + 1}
    with pytest.raises(ValueError, match="inverted"):
        ContentTransform.from_tensors(bad)
    with pytest.raises(ValueError, match="missing"):
        ContentTransform.from_tensors({k: v for k, v in transform.tensors().items() if "quantiles" not in k})
    assert transform.distance_quantiles.shape == (N_QUANTILES,)
    with pytest.raises(ValueError, match="finite"):
        ContentTransform.fit(np.full((4, 3), np.nan))
