"""POST /events and DELETE /users/{id}/events on the embedder, over a real SQLite store (real Feast, real parquet)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from encore import feature_names as fn
from encore.events import EventLog, EventRules, EventStoreUnavailable, label
from encore.store import Store
from tests.services.embedder.helpers import AUTH

DIM = 6


def _content(i: int) -> dict:
    vector = np.zeros(DIM, np.float32)
    vector[i % DIM] = 1.0
    return {"embedding": vector, "tokens": [i % 4], "encoder": "mfcc", "encoder_revision": "r", "typicality": 1.0,
            "tags": ""}  # fmt: skip


@pytest.fixture(scope="module")
def tracks(store: Store) -> list[str]:
    """Six tracks in the store, track i with content vector e_i."""
    prefix = uuid.uuid4().hex[:6]
    ids = [f"ev{prefix}-{i}" for i in range(DIM)]
    for i, track_id in enumerate(ids):
        store.push_track(track_id, None, _content(i))
    return ids


@pytest.fixture(scope="module")
def events_client(make_client: Callable[..., AbstractContextManager[TestClient]]) -> Iterator[TestClient]:
    with make_client(events_max_batch=10) as client:
        yield client


def _ts(seconds_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def _event(user: str, track: str, type_: str = "play", *, ms: int | None = 60_000, ago: float = 10.0) -> dict:
    return {"id": f"e-{uuid.uuid4().hex}", "user_id": user, "track_id": track, "type": type_, "ms": ms, "ts": _ts(ago)}


def _post(client: TestClient, events: list[dict]):
    return client.post("/events", json={"events": events}, headers=AUTH)


def _log(client: TestClient) -> EventLog:
    return client.app.state.events.log


def _user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def test_labels_follow_the_documented_rule() -> None:
    assert label("play", None) == 1 and label("play", 30_000) == 1 and label("play", 29_999) == 0
    assert label("skip", 5_000) == 0 and label("skip", None) == 0 and label("skip", 45_000) is None
    assert label("like", None) == 1 and label("dislike", 90_000) == 0


def test_a_batch_updates_features_online_and_the_offline_log(events_client: TestClient, store: Store, tracks) -> None:
    user = _user()
    batch = [
        _event(user, tracks[0], ago=30),
        _event(user, tracks[1], "skip", ms=3_000, ago=20),
        _event(user, tracks[2], "like", ms=None, ago=10),
    ]
    response = _post(events_client, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0, "users": 1}

    row = store.get_activity([user])[user]
    assert row["recent_tracks"] == [tracks[2], tracks[1], tracks[0]]  # newest first
    assert row["recent_types"] == ["like", "skip", "play"]
    assert (row["n_play"], row["n_skip"], row["n_like"], row["n_dislike"]) == (1, 1, 1, 0)
    assert row["skip_rate"] == pytest.approx(0.5)
    assert row["profile_n"] == 2  # the long play and the like; the short skip is a negative
    assert row["profile"] == pytest.approx([0.5, 0.0, 0.5, 0.0, 0.0, 0.0])

    logged = _log(events_client).read()
    mine = logged[logged["user_id"] == user]
    assert sorted(mine["event_id"]) == sorted(e["id"] for e in batch)
    assert sorted(mine["ms"]) == [-1, 3_000, 60_000]


def test_repeats_are_ignored_and_counted(events_client: TestClient, store: Store, tracks) -> None:
    user = _user()
    batch = [_event(user, tracks[0]), _event(user, tracks[1])]
    assert _post(events_client, batch).json()["accepted"] == 2
    again = _post(events_client, [*batch, _event(user, tracks[3]), batch[0]])
    assert again.json() == {"accepted": 1, "duplicates": 3, "users": 1}
    row = store.get_activity([user])[user]
    assert row["n_play"] == 3
    logged = _log(events_client).read()
    assert (logged["user_id"] == user).sum() == 3


def _bad_batches(tracks: list[str], user: str) -> list[tuple[str, list[dict], int, str, int]]:
    """(name, events, status, code, index of the first bad event)."""
    good = [_event(user, tracks[0]), _event(user, tracks[1])]

    def with_bad(**change: object) -> list[dict]:
        return [*good, {**_event(user, tracks[2]), **change}, {**_event(user, tracks[3]), "type": "nope"}]

    return [
        ("unknown type", with_bad(type="listen"), 422, "invalid_event", 2),
        ("malformed event id", with_bad(id="../../etc"), 422, "invalid_event", 2),
        ("malformed user id", with_bad(user_id=""), 422, "invalid_event", 2),
        ("malformed track id", with_bad(track_id="a b"), 422, "invalid_event", 2),
        ("negative ms", with_bad(ms=-5), 422, "invalid_event", 2),
        ("time without zone", with_bad(ts="2026-12-06T10:00:00"), 422, "invalid_event", 2),
        ("ts far in the future", with_bad(ts=_ts(-3600)), 422, "invalid_event", 2),
        ("ts older than the retention", with_bad(ts=_ts(30 * 86400)), 422, "invalid_event", 2),
        ("unknown track", [*good, _event(user, "no-such-track"), _event(user, tracks[1])], 422, "unknown_track", 2),
        ("unknown field", with_bad(extra=1), 422, "invalid_event", 2),
        ("batch over the limit", [_event(user, tracks[0]) for _ in range(11)], 413, "batch_too_large", -1),
        ("empty batch", [], 422, "empty_batch", -1),
    ]


@pytest.mark.parametrize("case", range(12))
def test_every_bad_batch_is_refused_whole(events_client: TestClient, store: Store, tracks, case: int) -> None:
    user = _user()
    name, batch, status, code, index = _bad_batches(tracks, user)[case]
    parts_before = _log(events_client).parts()

    response = _post(events_client, batch)

    assert response.status_code == status, (name, response.text)
    detail = response.json()["detail"]
    assert detail["code"] == code, name
    if index >= 0:
        assert detail["index"] == index and f"events[{index}]" in detail["message"], (name, detail)
    assert _log(events_client).parts() == parts_before, name  # nothing offline
    assert store.get_activity([user]) == {}, name  # nothing online
    good = batch[:2] if index >= 0 else batch[:1]  # the good events were not marked seen either
    if good:
        assert _post(events_client, good).json()["accepted"] == len(good), name


def test_events_need_the_key(events_client: TestClient, tracks) -> None:
    assert events_client.post("/events", json={"events": [_event("u1", tracks[0])]}).status_code == 401
    assert events_client.delete("/users/u1/events").status_code == 401


def test_late_events_never_roll_aggregates_back(events_client: TestClient, store: Store, tracks) -> None:
    user = _user()
    assert _post(events_client, [_event(user, tracks[0], ago=10), _event(user, tracks[1], ago=5)]).status_code == 200
    late = [_event(user, tracks[2], "skip", ms=1000, ago=3600), _event(user, tracks[3], ago=7)]
    assert _post(events_client, late).status_code == 200
    row = store.get_activity([user])[user]
    assert (row["n_play"], row["n_skip"]) == (3, 1)  # counted, whatever their order
    assert row["recent_tracks"] == [tracks[1], tracks[3], tracks[0], tracks[2]]  # placed by event time


def test_concurrent_writers_do_not_lose_updates(store: Store, tracks) -> None:
    """Two EventLogs over one store (two workers): every increment lands once."""
    user = _user()
    logs = [EventLog(store, EventRules()) for _ in range(2)]
    known = set(tracks).intersection

    def send(log: EventLog, n: int) -> None:
        from encore.events import Event

        for _ in range(n):
            now = datetime.now(UTC) - timedelta(seconds=1)
            log.ingest([Event(f"c-{uuid.uuid4().hex}", user, tracks[0], "play", 60_000, now)], known)

    threads = [threading.Thread(target=send, args=(log, 8)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_activity([user])[user]["n_play"] == 16
    for log in logs:
        log.close()


def test_delete_removes_events_and_features_online_and_offline(events_client: TestClient, store: Store, tracks) -> None:
    user, other = _user(), _user()
    assert (
        _post(events_client, [_event(user, tracks[0]), _event(other, tracks[1]), _event(user, tracks[2])]).json()[
            "accepted"
        ]
        == 3
    )

    response = events_client.delete(f"/users/{user}/events", headers=AUTH)

    assert response.status_code == 200, response.text
    assert response.json()["events"] == 2 and response.json()["had_features"] is True
    logged = _log(events_client).read()
    assert (logged["user_id"] == user).sum() == 0 and (logged["user_id"] == other).sum() == 1
    assert store.get_activity([user]) == {} and other in store.get_activity([other])
    assert _log(events_client).state.load([user])[user].profile_n == 0  # aggregates gone: a new start
    again = _post(events_client, [_event(user, tracks[4])])
    assert again.json()["accepted"] == 1
    assert store.get_activity([user])[user]["n_play"] == 1


def test_compaction_merges_parts_and_keeps_every_event_once(store: Store, tracks) -> None:
    log = EventLog(store, EventRules(compact_parts=2))
    user = _user()
    known = set(tracks).intersection
    from encore.events import Event

    sent = []
    for _ in range(5):
        event = Event(f"k-{uuid.uuid4().hex}", user, tracks[0], "play", None, datetime.now(UTC))
        sent.append(event.event_id)
        log.ingest([event], known)
    log.ingest([Event(sent[0], user, tracks[0], "play", None, datetime.now(UTC))], known)  # a repeat
    assert log.needs_compaction()
    assert log.compact() > 0
    assert not log.needs_compaction()
    assert max(log.levels()) >= 1
    logged = log.read()
    assert sorted(logged.loc[logged["user_id"] == user, "event_id"]) == sorted(sent)
    assert logged["event_id"].is_unique
    log.close()


def test_the_bootstraps_history_is_one_part_that_compaction_leaves_and_a_later_bootstrap_replaces(
    events_client: TestClient, store: Store, tracks
) -> None:
    from encore.events import HISTORY_PART, Event, is_history

    log, user = EventLog(store, EventRules(compact_parts=2)), _user()

    def history(n: int) -> pd.DataFrame:
        return pd.DataFrame({fn.EVENT_ID: [f"_history:train:{i}" for i in range(n)], fn.USER_ID: user,
                             fn.TRACK_ID: tracks[0], "type": "play", "ms": -1,
                             fn.EVENT_TIMESTAMP: pd.Timestamp("2024-03-01", tz="UTC")})  # fmt: skip

    log.write_history(history(3))
    with pytest.raises(ValueError, match="_history:"):
        log.write_history(history(1).assign(**{fn.EVENT_ID: "e-1"}))  # the log's other events are ingested
    for _ in range(3):
        log.ingest([Event(f"h-{uuid.uuid4().hex}", user, tracks[1], "play", None, datetime.now(UTC))], set)
    assert log.compact() > 0
    assert HISTORY_PART not in {p.name for parts in log.levels().values() for p in parts}  # never merged
    log.write_history(history(2))  # a later bootstrap's history replaces the earlier one whole
    mine = log.read().loc[lambda f: f[fn.USER_ID] == user]
    assert sorted(mine.loc[is_history(mine[fn.EVENT_ID]), fn.EVENT_ID]) == ["_history:train:0", "_history:train:1"]
    assert (~is_history(mine[fn.EVENT_ID])).sum() == 3
    log.close()
    # no client can send an event the log would take for the bootstrap's: ids start with a letter or digit
    assert _post(events_client, [_event(user, tracks[0]) | {"id": "_history:train:9"}]).status_code == 422


def test_feast_offline_source_reads_the_log(events_client: TestClient, store: Store) -> None:
    source = store.feast.get_data_source(f"{fn.EVENTS}_parquet")
    assert source.path.endswith(fn.EVENTS)


def test_batches_written_together_keep_their_own_counts(store: Store, tracks) -> None:
    """Threads of one process share a writer (group commit); ids repeated across batches count once in all."""
    from encore.events import Event

    log = EventLog(store, EventRules())
    user = _user()
    now = datetime.now(UTC) - timedelta(seconds=1)
    ids = [f"g-{uuid.uuid4().hex}" for _ in range(40)]
    batches = [
        [Event(i, user, tracks[k % DIM], "play", 60_000, now) for i in ids[k * 8 : k * 8 + 16]] for k in range(4)
    ]
    results = []

    def send(batch: list) -> None:
        results.append(log.ingest(batch, set(tracks).intersection))

    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    distinct = len({e.event_id for b in batches for e in b})
    assert sum(r.accepted for r in results) == distinct
    assert sum(r.accepted + r.duplicates for r in results) == sum(len(b) for b in batches)
    assert store.get_activity([user])[user]["n_play"] == distinct
    logged = log.read()
    assert (logged["user_id"] == user).sum() == distinct
    log.close()


def test_the_online_store_is_in_wal_mode_so_reads_never_wait_for_a_writer(
    events_client: TestClient, store: Store, tracks
) -> None:
    """The events writer switches the SQLite online store to WAL: a reader then reads (the last committed rows)
    while another connection holds the write lock, where a rollback journal would leave it waiting (then
    'database is locked')."""
    import sqlite3
    from contextlib import closing

    from encore.online_read import SqliteReader, read_rows

    user = _user()
    assert _post(events_client, [_event(user, tracks[0])]).status_code == 200
    with closing(sqlite3.connect(store.settings.sqlite_path, timeout=1)) as writer:
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        writer.execute("BEGIN EXCLUSIVE")  # a writer mid-transaction, as during another batch's commit
        try:
            reader = SqliteReader(store.settings)
            reader._connection().execute("PRAGMA busy_timeout = 200")  # fail fast instead of waiting 10 s
            rows = read_rows(reader, fn.USER_ID, [user], [fn.USER_ACTIVITY])
        finally:
            writer.execute("ROLLBACK")
    assert rows[user]["recent_tracks"] == [tracks[0]]


def _stored_fields(store: Store, user: str) -> dict[str, tuple]:
    """The user_activity rows stored for a listener: feature_name -> (value bytes, value_text)."""
    import sqlite3
    from contextlib import closing

    from encore.online_read import entity_key, sqlite_table

    table = sqlite_table(store.settings.project, fn.USER_ACTIVITY)
    with closing(sqlite3.connect(store.settings.sqlite_path)) as conn:
        query = f"SELECT feature_name, value, value_text FROM {table} WHERE entity_key = ?"
        return {name: (value, text) for name, value, text in conn.execute(query, (entity_key(fn.USER_ID, user),))}


def _feast_full_row(store: Store, log: EventLog, user: str) -> dict[str, tuple]:
    """What Feast's push stores for the listener's committed aggregates, every field (pushed under another id)."""
    import pandas as pd

    copy = f"{user}-feast"
    row = log.state.load([user])[user].row(copy)
    store.push_online(fn.USER_ACTIVITY, pd.DataFrame([row]))
    return _stored_fields(store, copy)


def test_changed_field_writes_leave_the_rows_a_full_write_would(store: Store, tracks) -> None:
    """On SQLite a batch writes only the fields its events changed, for listeners whose online row is known to
    hold the loaded aggregates; every stored value must still be the bytes Feast's push of the whole row stores:
    through new listeners, the recent list's cap, a lost online write (then repaired) and a deletion."""
    import sqlite3
    from contextlib import closing

    from encore.events import Event

    vectors = {t: np.eye(DIM, dtype=np.float32)[i] for i, t in enumerate(tracks)}
    log = EventLog(store, EventRules(recent_n=3), lambda ids: {t: vectors[t] for t in ids if t in vectors})
    known = set(tracks).intersection
    user, other = _user(), _user()
    start = datetime.now(UTC) - timedelta(minutes=30)

    def send(*events: tuple[str, str, str, int | None, float]) -> None:
        batch = [Event(f"w-{uuid.uuid4().hex}", u, t, kind, ms, start + timedelta(seconds=s))
                 for u, t, kind, ms, s in events]  # fmt: skip
        log.ingest(batch, known)

    def check(*users: str) -> None:
        for u in users:
            stored = _stored_fields(store, u)
            assert set(stored) == set(fn.USER_ACTIVITY_FIELDS)
            assert stored == _feast_full_row(store, log, u), u

    send((user, tracks[0], "play", 60_000, 1), (other, tracks[1], "skip", 2_000, 1))
    check(user, other)
    send((user, tracks[1], "like", None, 2))  # like: n_like, recent, profile
    send((user, tracks[2], "skip", 45_000, 3), (other, tracks[2], "dislike", None, 2))
    send((user, tracks[3], "play", 10_000, 4))  # a short play: no profile change; the cap of 3 drops one
    send((user, tracks[4], "play", 60_000, 0))  # older than the 3 kept: falls off, recent unchanged
    check(user, other)

    # A lost online write (the aggregates committed, the rows not): the next batch writes the whole row again.
    table = f'"{store.settings.project}_{fn.USER_ACTIVITY}"'
    with closing(sqlite3.connect(store.settings.sqlite_path)) as conn:
        conn.execute(f"CREATE TRIGGER refuse_rows BEFORE UPDATE ON {table} BEGIN SELECT RAISE(ABORT, 'down'); END")
        conn.commit()
    before = _stored_fields(store, user)
    with pytest.raises(EventStoreUnavailable):
        send((user, tracks[5], "like", None, 5))
    assert _stored_fields(store, user) == before  # nothing of it online
    with closing(sqlite3.connect(store.settings.sqlite_path)) as conn:
        conn.execute("DROP TRIGGER refuse_rows")
        conn.commit()
    send((user, tracks[0], "play", 60_000, 6))  # changes neither n_like nor n_dislike: still repaired
    check(user)
    assert log.state.load([user])[user].counts["like"] == 2

    log.delete_user(user)
    send((user, tracks[1], "dislike", None, 7))
    check(user)
    log.close()
