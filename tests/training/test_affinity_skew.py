"""Training/serving skew of `content_affinity`: the cosine of the listener's content profile and a candidate's
embedding that the ranker is served for a listener at a time equals, bit for bit, what training computes for the
same (listener, track, time), each through its own path.

Serving: events go in through `EventLog.ingest` (the embedder's path, folding the store's float32 vectors into a
float64 sum) in time order; at each checkpoint the online `user_activity` row is read (`Store.get_activity`) and
the ranker's frame is built from it through `Recent.user_row` (what the ranker passes) and `build_frame`.
Training: after every event is logged, rows at the checkpoints' times go through `training.retrain.point_in_time`
and `ranker_rows` (the profile from events strictly before each row: `encore.events.profile_before`). Each
checkpoint's time is the time of the next batch's first event, a play: an inclusive rule would fold it in.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore.events import Event, EventLog, EventRules, profile_before
from encore.ranker_frame import CONTENT_AFFINITY, TrackFeatures, build_frame, content_affinity
from encore.schema import FieldConfig
from encore.store import Store, StoreSettings
from services.ranker.pipeline import Recent
from training import retrain

DIM = 16
TRACKS = [f"t{i}" for i in range(6)]
SILENT = "t-meta-only"  # a track without content: affinity 0 on both sides
USERS = ["u1", "u2", "u3"]  # u3 never listens
VECTORS = {t: np.random.default_rng(5).standard_normal((len(TRACKS), DIM)).astype(np.float32)[i]
           for i, t in enumerate(TRACKS)}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(StoreSettings(tmp_path / "feast", f"aff_{uuid.uuid4().hex[:8]}", "sqlite"))
    store.apply()
    users = pd.DataFrame({fn.USER_ID: USERS, "country": "SE", "age": 30, "gender": "", "n_plays": 5, "n_tracks": 3})
    meta = pd.DataFrame({fn.TRACK_ID: [*TRACKS, SILENT], "artist_id": "a", "genre": "jazz", "key": 1, "mode": 1,
                         "language": "", "release_year": 2001, "popularity": np.float32(0.2)})  # fmt: skip
    content = pd.DataFrame({fn.TRACK_ID: TRACKS, "embedding": [VECTORS[t] for t in TRACKS],
                            "tokens": [[i] for i in range(len(TRACKS))], "encoder": "mfcc", "encoder_revision": "r",
                            "typicality": 1.0, "tags": ""})  # fmt: skip
    old = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)
    for frame in (users, meta, content):
        frame[fn.EVENT_TIMESTAMP] = old
    store.materialize_frames(users, meta, content)
    return store


def _fields() -> list[FieldConfig]:
    return [FieldConfig(fn.USER_ID, "id", owner="user"), *retrain.affinity_fields()]


def _batches(start: datetime) -> list[list[Event]]:
    """Batches in time order, each opening with a play of u1 (the checkpoint's own time); plays, likes, long
    skips (no label) and short plays (negatives) of u1 and u2, two events of a batch at one time."""
    kinds = [("play", 90_000), ("like", None), ("skip", 40_000), ("play", 5_000), ("play", None), ("dislike", None)]
    batches, at = [], start
    for n in range(6):
        batch = [Event(f"e{n}-0-{uuid.uuid4().hex[:6]}", "u1", TRACKS[n % 6], "play", 120_000, at)]
        for i in range(1, 4):
            kind, ms = kinds[(n + i) % len(kinds)]
            user = "u2" if (n >= 2 and i == 2) else "u1"
            when = at + timedelta(seconds=i // 2)  # events 0 and 1 share the batch's first time
            batch.append(Event(f"e{n}-{i}-{uuid.uuid4().hex[:6]}", user, TRACKS[(n * 3 + i) % 6], kind, ms, when))
        batches.append(batch)
        at += timedelta(seconds=30)
    return batches


def test_served_content_affinity_equals_point_in_time_training_affinity(store: Store) -> None:
    def embeddings(ids: list[str]) -> dict[str, np.ndarray]:  # the store's float32 vectors, as the embedder's
        return {t: VECTORS[t] for t in ids if t in VECTORS}

    log = EventLog(store, EventRules(), embeddings)
    known = set(TRACKS) | {SILENT}
    batches = _batches(datetime.now(UTC) - timedelta(hours=1))
    early = pd.Timestamp(batches[0][0].ts) - pd.Timedelta(days=1)  # the bootstrap's history: never in a profile
    history = {fn.EVENT_ID: [f"_history:train:{i}" for i in range(3)], fn.USER_ID: ["u1", "u3", "u3"],
               fn.TRACK_ID: TRACKS[:3], "type": "play", "ms": -1,
               fn.EVENT_TIMESTAMP: [early + pd.Timedelta(seconds=i) for i in range(3)]}  # fmt: skip
    log.write_history(pd.DataFrame(history))
    candidates = [*TRACKS, SILENT]
    items = TrackFeatures.from_tables(candidates, store.read_offline(fn.TRACK_META),
                                      store.read_offline(fn.TRACK_CONTENT))  # fmt: skip
    served: dict[tuple[str, pd.Timestamp], np.ndarray] = {}
    online_profiles: dict[tuple[str, pd.Timestamp], np.ndarray] = {}
    for batch in batches:
        checkpoint = pd.Timestamp(batch[0].ts)  # before this batch is written: a request at its first event's time
        rows = store.get_activity(USERS)
        for user in USERS:
            mapping = Recent.from_row(rows.get(user)).user_row({"country": "SE"})  # what the ranker passes
            frame = build_frame(_fields(), user, mapping, items)
            served[(user, checkpoint)] = frame[CONTENT_AFFINITY].to_numpy()
            if rows.get(user):
                online_profiles[(user, checkpoint)] = np.asarray(rows[user]["profile"], np.float32)
        log.ingest(batch, lambda ids: set(ids) & known)
    # A later play of u2, after every checkpoint: it must reach no earlier row.
    late = Event("late-play", "u2", TRACKS[5], "play", 200_000, batches[-1][-1].ts + timedelta(seconds=5))
    log.ingest([late], lambda ids: set(ids) & known)
    log.close()

    keys = list(served)
    rows = pd.DataFrame({fn.USER_ID: np.repeat([u for u, _ in keys], len(candidates)),
                         fn.TRACK_ID: candidates * len(keys),
                         fn.EVENT_TIMESTAMP: np.repeat(np.array([t for _, t in keys], dtype=object), len(candidates)),
                         "label": 1})  # fmt: skip
    joined = retrain.point_in_time(store, rows)
    trained = retrain.ranker_rows(joined, _fields())[CONTENT_AFFINITY].to_numpy().reshape(len(keys), len(candidates))

    for n, key in enumerate(keys):
        assert trained[n].dtype == served[key].dtype == np.float64
        assert trained[n].tobytes() == served[key].tobytes(), (key, trained[n], served[key])  # bit for bit
        if key in online_profiles and online_profiles[key].size:  # the profile itself, float32 for float32
            got = joined["profile"].iloc[n * len(candidates)]
            assert got.dtype == np.float32 and got.tobytes() == online_profiles[key].tobytes(), key
    final = pd.Timestamp(batches[-1][0].ts)
    u1, u2 = served[("u1", final)], served[("u2", final)]
    assert np.all(u1[:-1] != 0) and len(set(u1[:-1].tolist())) == len(TRACKS)  # real values, one per track
    assert u1[-1] == 0 and u2[-1] == 0  # the track without content
    assert np.all(served[("u3", final)] == 0)  # no events (history only): no profile
    assert np.all(served[("u1", pd.Timestamp(batches[0][0].ts))] == 0)  # before anything: no profile
    assert np.any(u2 != 0)
    # The late play counts from just after its own time on, and not at it (the rows above, all earlier, matched
    # what was served before it was ingested).
    stamp = pd.Timestamp(late.ts)
    around = pd.DataFrame(
        {
            fn.USER_ID: ["u2", "u2"],
            fn.TRACK_ID: TRACKS[5],
            "label": 1,
            fn.EVENT_TIMESTAMP: [stamp, stamp + pd.Timedelta(microseconds=1)],
        }
    )
    counts = retrain.point_in_time(store, around)["profile_n"].tolist()
    assert counts[1] == counts[0] + 1 and counts[0] > 0


def test_a_play_never_counts_toward_its_own_time_and_history_never_counts() -> None:
    at = pd.Timestamp("2026-12-07 01:00:00", tz="UTC")
    v = {"a": np.array([1, 0], np.float32), "b": np.array([0, 2], np.float32)}
    log = pd.DataFrame({fn.EVENT_ID: ["e0", "e1", "e2", "_history:train:0", "e3"],
                        fn.USER_ID: ["x", "x", "x", "y", "y"], fn.TRACK_ID: ["a", "b", "b", "a", "b"],
                        "type": ["play", "skip", "like", "play", "play"], "ms": [-1, 2_000, -1, -1, 10_000],
                        fn.EVENT_TIMESTAMP: [at, at + pd.Timedelta(seconds=1), at + pd.Timedelta(seconds=2),
                                             at - pd.Timedelta(days=1), at]})  # fmt: skip
    rows = log[[fn.USER_ID, fn.EVENT_TIMESTAMP]].copy()  # one row per event, at the event's own time
    got = profile_before(log, rows, v)
    assert got["profile_n"].tolist() == [0, 1, 1, 0, 0]  # the skip is not a positive; y's play is short, history out
    assert got["profile"].iloc[0] is None and np.array_equal(got["profile"].iloc[2], [1, 0])
    later = pd.DataFrame({fn.USER_ID: ["x"], fn.EVENT_TIMESTAMP: [at + pd.Timedelta(seconds=3)]})
    assert np.array_equal(profile_before(log, later, v)["profile"].iloc[0], np.float32([0.5, 1.0]))


def test_content_affinity_is_the_cosine_and_zero_without_a_profile_or_content() -> None:
    profiles = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], np.float32)
    embeddings = np.array([[2, 0], [0, 3], [1, 1], [1, 0]], np.float32)
    got = content_affinity(profiles, np.array([1, 1, 2, 0]), embeddings, np.array([True, True, False, True]))
    assert got.tolist() == [1.0, 0.0, 0.0, 0.0]
    one = np.broadcast_to(np.float32([3, 4]), (2, 2))  # serving: one profile for every candidate
    assert content_affinity(one, np.array([2, 2]), np.float32([[3, 4], [-4, 3]]), np.ones(2, bool)).tolist() == [1, 0]
    assert content_affinity(one, np.array([2, 2]), np.zeros((2, 3)), np.ones(2, bool)).tolist() == [0, 0]  # lengths


@pytest.mark.parametrize("dim", [3, 64, 200, 257])
def test_a_rows_content_affinity_does_not_depend_on_its_batch(dim: int) -> None:
    """Serving computes a request's candidates (one profile broadcast), training a frame of many rows: the same
    (profile, track) pair must give the same bits either way, whatever the batch size or memory layout."""
    rng = np.random.default_rng(dim)
    profiles = rng.standard_normal((300, dim)).astype(np.float32)
    embeddings = rng.standard_normal((300, dim)).astype(np.float32)
    counts, has = np.full(300, 2), np.ones(300, bool)
    batch = content_affinity(profiles, counts, embeddings, has)
    fortran = content_affinity(np.asfortranarray(profiles), counts, np.asfortranarray(embeddings), has)
    assert np.array_equal(batch, fortran)
    for i in (0, 7, 299):
        alone = content_affinity(profiles[i : i + 1], counts[:1], embeddings[i : i + 1], has[:1])
        candidates = np.roll(embeddings, -i, axis=0)[:50]  # track i first, among 49 others
        served = content_affinity(np.broadcast_to(profiles[i], (50, dim)), counts[:50], candidates, has[:50])
        assert alone[0] == batch[i] == served[0], (dim, i)


def test_the_retrain_reads_content_affinity_unless_told_not_to() -> None:
    assert retrain.parse_args([]).affinity_feature is True
    assert retrain.parse_args(["--no-affinity-feature"]).affinity_feature is False
