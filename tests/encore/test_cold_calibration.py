"""Cold tracks' scores on the warm scale: bounded, order-keeping, and placed by the reference panel."""

from __future__ import annotations

import numpy as np
import pytest

from encore.cold_calibration import N_QUANTILES, ColdCalibration

PANEL = [{"user_id": "u1", "country": "SE"}, {"user_id": "u2", "country": "FR"}]


def _calibration(panel_weight: float = 0.5) -> ColdCalibration:
    rng = np.random.default_rng(0)
    warm = rng.beta(2, 2, 5000)  # spread over (0, 1)
    cold = 0.2 + 0.1 * rng.beta(2, 2, 5000)  # the same rows shown as uploads: low and narrow
    return ColdCalibration.fit(warm, cold, PANEL, panel_weight)


def test_cold_scores_take_the_warm_scale_and_keep_their_order():
    calibration = _calibration()
    raw = np.array([0.0, 0.2, 0.25, 0.3, 1.0])
    warm = calibration.warm_scores(raw)
    assert (np.diff(warm) >= 0).all()  # a better cold match never scores lower
    assert warm[0] == pytest.approx(calibration.warm_quantiles[0]) and warm[-1] == pytest.approx(
        calibration.warm_quantiles[-1]
    )  # bounded by the warm range: no content vector saturates a cold track's score
    assert warm[2] == pytest.approx(np.median(calibration.warm_quantiles), abs=0.05)  # the cold median -> warm median


def test_the_panel_lifts_a_track_for_the_listeners_it_suits_best():
    calibration = _calibration(panel_weight=0.5)
    raw = np.full(3, 0.25)  # a middling cold score, for three listeners
    placed = calibration.warm_scores(raw, panel_quantile=np.array([0.0, 0.5, 1.0]))
    assert placed[0] < placed[1] < placed[2]
    only_global = ColdCalibration.fit(np.linspace(0, 1, 50), np.linspace(0.2, 0.3, 50), PANEL, 0.0)
    np.testing.assert_allclose(only_global.warm_scores(raw, np.array([0.0, 0.5, 1.0])), only_global.warm_scores(raw))


def test_by_default_every_track_tops_the_lists_of_listeners_who_like_it_more_than_the_whole_panel():
    calibration = ColdCalibration.fit(np.linspace(0, 1, 500), np.linspace(0.2, 0.3, 500), PANEL)
    assert calibration.panel_weight == 1.0
    raw = np.array([0.0, 0.2, 0.3])  # however poor the cold match is overall
    top = calibration.warm_scores(raw, panel_quantile=np.ones(3))
    np.testing.assert_allclose(top, calibration.warm_quantiles[-1])
    bottom = calibration.warm_scores(raw, panel_quantile=np.zeros(3))
    np.testing.assert_allclose(bottom, calibration.warm_quantiles[0])


def test_round_trip_and_bad_documents(tmp_path):
    calibration = _calibration()
    calibration.write(tmp_path / "c.json")
    again = ColdCalibration.read(tmp_path / "c.json")
    np.testing.assert_array_equal(
        again.warm_scores(np.array([0.22, 0.27])), calibration.warm_scores(np.array([0.22, 0.27]))
    )
    assert again.reference_users == PANEL and again.panel_weight == 0.5
    with pytest.raises(ValueError, match="non-decreasing"):
        ColdCalibration(np.arange(N_QUANTILES)[::-1] * 1.0, np.arange(N_QUANTILES) * 1.0, PANEL).check()
    with pytest.raises(ValueError, match="reference_users"):
        ColdCalibration.fit(np.ones(10), np.ones(10), [])
    (tmp_path / "bad.json").write_text('{"format_version": 99}')
    with pytest.raises(ValueError, match="version"):
        ColdCalibration.read(tmp_path / "bad.json")
