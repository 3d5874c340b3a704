"""A listener's aggregates survive the store's record format (binary, and the older JSON records) exactly."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import numpy as np

from encore.events import Activity, Event


def _activity() -> Activity:
    activity = Activity()
    start = datetime(2026, 12, 7, tzinfo=UTC)
    rng = np.random.default_rng(0)
    for n, kind in enumerate(["play", "skip", "like", "play", "dislike", "play"]):
        event = Event(f"e{n}", "u1", f"track-{n}.x:y", kind, 60_000 if n != 3 else 1_000, start + timedelta(seconds=n))
        activity.fold(event, rng.standard_normal(7), recent_n=4)
    activity.stamp_us = 1_796_605_323_456_789
    return activity


def test_binary_record_round_trips() -> None:
    activity = _activity()
    back = Activity.decode(activity.encode())
    assert back.counts == {"play": 3, "skip": 1, "like": 1, "dislike": 1}
    assert back.recent == activity.recent and len(back.recent) == 4 and back.recent[0][1] == "track-5.x:y"
    assert np.array_equal(back.profile_sum, activity.profile_sum) and back.profile_n == activity.profile_n == 3
    assert back.stamp_us == activity.stamp_us
    assert back.row("u1")["skip_rate"] == activity.row("u1")["skip_rate"] == 0.25


def test_empty_and_older_json_records_read() -> None:
    assert Activity.decode(None).counts == Activity().counts
    assert Activity.decode(Activity().encode()).recent == []
    activity = _activity()
    legacy = json.dumps({
        "counts": activity.counts, "recent": activity.recent, "profile_n": activity.profile_n,
        "profile_sum": base64.b64encode(activity.profile_sum.astype("<f8").tobytes()).decode(),
        "stamp": activity.stamp_us,
    })  # fmt: skip
    for blob in (legacy, legacy.encode()):
        back = Activity.decode(blob)
        assert back.recent == activity.recent and np.array_equal(back.profile_sum, activity.profile_sum)
        assert back.stamp_us == activity.stamp_us
