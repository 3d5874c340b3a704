"""Cold rows through the ranker's real bundle: panel scores equal scoring each panel listener directly."""

from __future__ import annotations

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.artifacts import load_bundle
from encore.cold_calibration import ColdCalibration, cold_rows
from encore.schema import OOV
from services.ranker.bundle import _panel_inputs, load_ranker_model
from services.ranker.cold import ColdScores
from tests.services.ranker.conftest import TrainedBundle


def test_a_cold_row_is_placed_among_its_own_scores_for_the_panel(trained_bundle: TrainedBundle) -> None:
    model = load_ranker_model(load_bundle(trained_bundle.artifacts_dir / trained_bundle.bundle_id))
    spec, users = trained_bundle.spec, trained_bundle.frames.users
    panel = users.iloc[:16].to_dict("records")
    listener = str(users[fn.USER_ID].iloc[20])
    warm_track = str(trained_bundle.frames.meta[fn.TRACK_ID].iloc[0])
    frame = trained_bundle.frame_for(listener, [warm_track, warm_track])
    frame.loc[1, fn.TRACK_ID] = "an-upload"  # same audio and meta, an id the model never trained on
    packed = spec.encode_packed(frame)
    assert cold_rows(spec, packed).tolist() == [False, True]
    raw = model.scorer.score(packed)

    calibration = ColdCalibration.fit(np.linspace(0, 1, 200), np.linspace(0.3, 0.6, 200), panel, panel_weight=1.0)
    cold_scores = ColdScores(spec, calibration, _panel_inputs(spec, panel))
    scores = cold_scores(packed, raw, model.scorer.score)

    assert scores[0] == raw[0]  # a warm row keeps its score
    # The panel's scores of the same cold row, computed the long way: each panel listener's own frame.
    direct = []
    for member in panel:
        row = trained_bundle.frame_for(str(member[fn.USER_ID]), [warm_track])
        row[fn.TRACK_ID] = pd.Series([None], dtype=object)
        direct.append(model.scorer.score(spec.encode_packed(row))[0])
    expected_quantile = np.searchsorted(np.sort(direct), raw[1], side="right") / len(panel)
    assert 0 < expected_quantile < 1 and np.ptp(direct) > 0  # the listener sits inside the panel: a real check
    assert scores[1] == np.float32(calibration.warm_scores(raw[1:], np.array([expected_quantile]))[0])
    assert spec.encode(row)[fn.TRACK_ID][0] == OOV

    # Another listener asking for the same track reuses the panel's scores: no second panel scoring.
    calls = []
    other = spec.encode_packed(trained_bundle.frame_for(str(users[fn.USER_ID].iloc[21]), [warm_track]).assign(
        **{fn.TRACK_ID: None}))  # fmt: skip
    cold_scores(other, model.scorer.score(other), lambda p: calls.append(p) or model.scorer.score(p))
    assert calls == []
