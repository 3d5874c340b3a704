"""Training/serving skew of the recent-event features: what the ranker is served for a listener at a time equals what
training computes for the same (listener, time), through each side's own path.

Serving: events go in through `EventLog.ingest` (the embedder's path) in time order; at each checkpoint the online
`user_activity` row is read (`Store.get_activity`, what the ranker reads per request) and the ranker's frame is
built from it (`build_frame`). Training: after every event is logged, rows at the checkpoints' times go through
`training.retrain.point_in_time` and `ranker_rows` (the retrain's path: features from events strictly before each
row). Each checkpoint's time is the time of the next batch's first event, so an inclusive join would count that
event and fail the comparison.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore.events import Event, EventLog, EventRules, activity_before
from encore.ranker_frame import ACTIVITY_COLUMNS, TrackFeatures, build_frame
from encore.schema import FieldConfig
from encore.store import Store, StoreSettings
from training import retrain

TRACKS = ["t0", "t1", "t2"]
USERS = ["u1", "u2", "u3"]  # u3 never listens
KINDS = ["play", "skip", "play", "like", "skip", "dislike", "play", "skip"]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(StoreSettings(tmp_path / "feast", f"skew_{uuid.uuid4().hex[:8]}", "sqlite"))
    store.apply()
    users = pd.DataFrame({fn.USER_ID: USERS, "country": "SE", "age": 30, "gender": "", "n_plays": 5, "n_tracks": 3})
    meta = pd.DataFrame({fn.TRACK_ID: TRACKS, "artist_id": "a", "genre": "jazz", "key": 1, "mode": 1,
                         "language": "", "release_year": 2001, "popularity": np.float32(0.2)})  # fmt: skip
    content = pd.DataFrame({fn.TRACK_ID: TRACKS, "embedding": list(np.eye(3, dtype=np.float32)),
                            "tokens": [[0], [1], [2]], "encoder": "mfcc", "encoder_revision": "r",
                            "typicality": 1.0, "tags": ""})  # fmt: skip
    old = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)  # the profiles exist before every event
    for frame in (users, meta, content):
        frame[fn.EVENT_TIMESTAMP] = old
    store.materialize_frames(users, meta, content)
    return store


def _batches(start: datetime) -> list[list[Event]]:
    """Batches in time order; two events of a batch share a time, and u2 joins late."""
    batches, at = [], start
    for n in range(6):
        batch = []
        for i, kind in enumerate(KINDS[n : n + 3]):
            user = "u2" if (n >= 3 and i == 1) else "u1"
            ms = 10_000 if kind == "skip" else 90_000
            when = at + timedelta(seconds=i // 2)  # events 0 and 1 at the batch's first time
            batch.append(Event(f"e{n}-{i}-{uuid.uuid4().hex[:6]}", user, TRACKS[(n + i) % 3], kind, ms, when))
        batches.append(batch)
        at += timedelta(seconds=30)
    return batches


def _fields() -> list[FieldConfig]:
    return [FieldConfig(fn.USER_ID, "id", owner="user"), *retrain.activity_fields()]


def test_served_recent_event_features_equal_point_in_time_training_features(store: Store) -> None:
    log = EventLog(store, EventRules(), lambda ids: {t: np.eye(3)[TRACKS.index(t)] for t in ids})
    batches = _batches(datetime.now(UTC) - timedelta(hours=1))
    # The bootstrap's history in the log (training/bootstrap.py), u3's too: it never passes ingest, so neither side
    # counts it (encore.events.is_history), and u3 stays at zero on both.
    early = pd.Timestamp(batches[0][0].ts) - pd.Timedelta(days=1)
    history = {fn.EVENT_ID: [f"_history:train:{i}" for i in range(4)], fn.USER_ID: ["u1", "u1", "u3", "u3"],
               fn.TRACK_ID: TRACKS[:2] * 2, "type": ["play", "skip"] * 2, "ms": -1,
               fn.EVENT_TIMESTAMP: [early + pd.Timedelta(seconds=i) for i in range(4)]}  # fmt: skip
    log.write_history(pd.DataFrame(history))
    served: dict[tuple[str, pd.Timestamp], dict] = {}
    for batch in batches:
        checkpoint = pd.Timestamp(batch[0].ts)  # before this batch is written: a request at its first event's time
        rows = store.get_activity(USERS)
        for user in USERS:
            frame = build_frame(_fields(), user, rows.get(user), TrackFeatures.unknown(["t0"]))
            served[(user, checkpoint)] = {c: float(frame[c].iloc[0]) for c in ACTIVITY_COLUMNS}
        log.ingest(batch, lambda ids: set(ids) & set(TRACKS))
    log.ingest(batches[1][:1], lambda ids: set(ids) & set(TRACKS))  # a repeat: counted once on both sides
    log.close()

    keys = list(served)
    rows = pd.DataFrame({fn.USER_ID: [u for u, _ in keys], fn.TRACK_ID: "t0",
                         fn.EVENT_TIMESTAMP: [t for _, t in keys], "label": 1})  # fmt: skip
    trained = retrain.ranker_rows(retrain.point_in_time(store, rows), _fields())

    for n, key in enumerate(keys):
        assert {c: float(trained[c].iloc[n]) for c in ACTIVITY_COLUMNS} == served[key], key
    last = served[("u1", pd.Timestamp(batches[-1][0].ts))]
    assert last["n_play"] > 0 and last["n_skip"] > 0 and 0 < last["skip_rate"] < 1  # not trivially all zeros
    assert all(v == 0 for v in served[("u3", pd.Timestamp(batches[-1][0].ts))].values())


def test_an_event_never_counts_toward_its_own_time() -> None:
    at = pd.Timestamp("2026-12-07 01:00:00", tz="UTC")
    times = [at, at + pd.Timedelta(seconds=1), at + pd.Timedelta(seconds=2), at]
    log = pd.DataFrame(
        {fn.USER_ID: ["a", "a", "a", "b"], "type": ["play", "skip", "play", "skip"], fn.EVENT_TIMESTAMP: times}
    )
    rows = log[[fn.USER_ID, fn.EVENT_TIMESTAMP]].copy()  # one row per event, at the event's own time
    got = activity_before(log, rows)
    assert got["n_play"].tolist() == [0, 1, 1, 0] and got["n_skip"].tolist() == [0, 0, 1, 0]
    assert got["skip_rate"].tolist() == [0, 0, 0.5, 0]
