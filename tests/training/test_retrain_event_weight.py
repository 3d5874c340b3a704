"""`training.retrain --event-weight`: each logged event's row (a play or a skip) counts `weight` times in the
retrain's ranker rows, its sampled negative once (training.retrain.weighted_events)."""

from __future__ import annotations

import pandas as pd
import pytest

from training.retrain import parse_args, weighted_events


def test_logged_events_count_weight_times_and_their_sampled_negatives_once() -> None:
    events = pd.DataFrame({"event_id": ["e1", "e2", "e1:neg"], "label": [1, 0, 0]})
    extra = pd.DataFrame({"user_id": ["r0", "r1", "r2"], "label": [1, 0, 0]})
    assert weighted_events(extra, events, 1).equals(extra)
    rows = weighted_events(extra, events, 3)
    assert rows["user_id"].value_counts().to_dict() == {"r0": 3, "r1": 3, "r2": 1}
    assert rows["label"].tolist() == [1, 0, 0, 1, 0, 1, 0]  # the skip (label 0) is weighted like the play


def test_the_event_weight_defaults_to_one_and_below_one_is_refused_in_one_line(capsys) -> None:
    assert parse_args([]).event_weight == 1
    assert parse_args(["--event-weight", "5"]).event_weight == 5
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--event-weight", "0"])
    assert exit_.value.code == 2 and "--event-weight must be at least 1, got 0" in capsys.readouterr().err
