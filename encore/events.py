"""Listening events: labels, batch checks, idempotent durable ingest, real-time features, offline log, deletion.

One batch (POST /events on the embedder) goes through `EventLog.ingest`:
1. `check_batch`: every event is checked before anything is written (time window, known track); the first bad
   one refuses the whole batch (`EventRefused`, with its index and field).
2. Under the store's `events` lock (one writer at a time across workers and processes, `Store.write_lock`):
   a. event ids already seen are dropped (and counted); the seen set lives in the store (Redis keys with an
      expiry, or a SQLite table pruned by age) for `retention_days`;
   b. the new events are written as one parquet part (fsync, then rename) into the offline log
      (offline/events/, the Feast `events_parquet` source);
   c. each listener's aggregates are folded forward and committed together with the new ids in one store
      transaction (Redis MULTI/EXEC or one SQLite transaction): either both or neither;
   d. every listener of the batch gets their `user_activity` row pushed online, stamped with a per-listener
      increasing time, so a newer row is never replaced by an older one (Redis refuses older stamps; SQLite keeps
      the last write, and pushes happen in lock order).
   Batches that arrive while another is being written are written together next (group commit: one part, one
   commit, one push for all of them), each answered with its own counts.
   A failure anywhere raises `EventStoreUnavailable` (HTTP 503; the client retries the same batch). A retry after
   (b) only adds offline rows with ids already logged (every reader keeps the first row per event_id); a retry
   after (c) finds the ids seen and re-pushes the listeners' rows (d), which repairs a lost push. So an event
   is never acknowledged and then lost, and never counted twice online.
Late and out-of-order events: every aggregate is order-free (counts, sums); `recent` keeps the `recent_n`
newest by event time, so a late event takes its place by time or falls off. Events older than the retention
are refused (their ids may have been forgotten, so a repeat could not be recognised).
"""

from __future__ import annotations

import base64
import bisect
import json
import logging
import os
import sqlite3
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from encore import feature_names as fn
from encore.errors import EncoreError
from encore.store import Store, StoreError

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = ("play", "skip", "like", "dislike")
_TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPES)}
PLAY_POSITIVE_MS = 30_000  # a play (or skip) heard at least this long counts as a listen
LOCK_NAME = "events"
# The events lock's lease, and how long a batch waits for it (Redis; on SQLite, the wait only): a group of batches
# commits in well under a second (~60 ms per 500 events), so a holder that died, or a lock that a restarted Redis
# kept (AOF), holds the next batch back 5 s at most, not 30; a writer stalled past it commits nothing (the
# state's optimistic `commit`), and its batch is retried. Deletion and compaction rewrite parts: longer leases.
INGEST_LOCK_S = 5.0
MAINTENANCE_LOCK_S = 300.0
# The bootstrap's history (training/bootstrap.py): its protocol splits' plays, logged in one part of their own
# (HISTORY_PART, written whole by `write_history`, never compacted) with ids `_history:<split>:<n>`. No event id
# of POST /events can start with '_' (services/embedder/events_routes.py ID_PATTERN), so these ids are the
# bootstrap's only. The history never passes `ingest`: user_activity never counts it, and so neither does
# `activity_before`, the training side (one rule: `is_history`).
HISTORY_PREFIX = "_history:"
HISTORY_PART = "history.parquet"
COMPACT_LOCK_NAME = "events-compact"
MAX_LEVEL = 8
# Page cache of each writer connection (SQLite's default is 2 MiB): a batch's ~440 listeners touch pages all over
# the aggregates and user_activity tables; with them cached, and rows written in key order, the upserts and commits
# cost ~4 ms less CPU a batch. Filled only as pages are read.
CACHE_KIB = 32 * 1024

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("ms", pa.int64(), nullable=False),  # -1: not given
        pa.field(fn.EVENT_TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(fn.CREATED_TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def label(event_type: str, ms: int | None) -> int | None:
    """The training label of one event (docs/events.md): 1 positive, 0 negative, None no label.

    play: 1 when heard >= 30 s (or ms not given: a whole play), else 0 (a short play is a skip in all but name).
    skip: 0 when skipped before 30 s (or ms not given); None when skipped after 30 s (heard, then left: neither).
    like: 1. dislike: 0.
    """
    if event_type == "like":
        return 1
    if event_type == "dislike":
        return 0
    long = ms is None or ms >= PLAY_POSITIVE_MS
    if event_type == "play":
        return 1 if long else 0
    if event_type == "skip":
        return None if ms is not None and ms >= PLAY_POSITIVE_MS else 0
    raise ValueError(f"unknown event type {event_type!r}")


def is_history(event_ids: pd.Series) -> np.ndarray:
    """Which logged events are the bootstrap's history (HISTORY_PREFIX), not events of POST /events."""
    return event_ids.astype(str).str.startswith(HISTORY_PREFIX).to_numpy(dtype=bool)


def history_split(event_ids: pd.Series) -> pd.Series:
    """The protocol split (train, valid, test) each history event id names: `_history:<split>:<n>`."""
    return event_ids.astype(str).str.split(":").str[1]


def activity_before(log: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The listener's recent-event features as of each row: n_play, n_skip, n_like, n_dislike and skip_rate from
    the logged events (`EventLog.read()`: one row per event id) of the row's user_id **strictly before** the row's
    event_timestamp, aligned with `rows`. What `user_activity` held online when a request came at that time, with
    every earlier event acknowledged and none later (events arriving in time order); the training side of the
    skew test (tests/training/test_activity_skew.py). An event never counts toward its own row, so its label
    cannot leak. Counts and skip_rate as float64; skip_rate is rounded through float32, as the store keeps it.
    The bootstrap's history is left out (`is_history`): it never passes ingest, so user_activity never counts it.
    """
    if fn.EVENT_ID in log:
        log = log[~is_history(log[fn.EVENT_ID])]
    users = pd.concat([rows[fn.USER_ID], log[fn.USER_ID]], ignore_index=True).astype(str)
    codes = pd.factorize(users)[0]
    ns = _ns(pd.concat([rows[fn.EVENT_TIMESTAMP], log[fn.EVENT_TIMESTAMP]], ignore_index=True))
    flag = np.r_[np.zeros(len(rows), np.int8), np.ones(len(log), np.int8)]  # at equal times rows sort first
    order = np.lexsort((flag, ns, codes))  # by user, then time, rows before events
    sorted_codes = codes[order]
    group_start = np.searchsorted(sorted_codes, sorted_codes, side="left")
    where = np.empty(len(order), np.int64)
    where[order] = np.arange(len(order))
    types = np.r_[np.full(len(rows), "", dtype=object), log["type"].astype(str).to_numpy(dtype=object)][order]
    out: dict[str, np.ndarray] = {}
    for kind in EVENT_TYPES:
        hit = (types == kind).astype(np.int64)
        before = np.cumsum(hit) - hit  # events of this kind earlier in the order
        counts = before - before[group_start]  # ... of this listener
        out[f"n_{kind}"] = counts[where[: len(rows)]].astype(np.float64)
    plays, skips = out["n_play"], out["n_skip"]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(plays + skips > 0, skips / np.maximum(plays + skips, 1), 0.0)
    out["skip_rate"] = rate.astype(np.float32).astype(np.float64)
    return pd.DataFrame(out, index=rows.index)


def profile_before(log: pd.DataFrame, rows: pd.DataFrame, embeddings: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The listener's running content profile as of each row: `profile` (float32 vector, None without one) and
    `profile_n`, from the logged events (`EventLog.read()`: event_id, user_id, track_id, type, ms, event_timestamp)
    of the row's user_id **strictly before** the row's event_timestamp, aligned with `rows`: what `Activity.fold`
    and `features()` held online for a request at that time (the training side of `content_affinity`'s skew test,
    tests/training/test_affinity_skew.py). `embeddings`: track id -> the content vector the store holds (what the
    embedder folds in); events of tracks without one are not folded, as online.

    Exactly the online arithmetic: positives (`label(type, ms) == 1`) in time order, summed in float64 one after
    the other (a cumulative sum, S_k = S_(k-1) + v_k, as `fold` adds them), then float32(S_k / k). Events sharing a
    time are summed in the log's order (event id), which may differ from their arrival order online: the float64
    sum can then differ in its last bit. The bootstrap's history is left out (`is_history`), as in `activity_before`.
    """
    n = len(rows)
    profiles = np.full(n, None, dtype=object)
    counts = np.zeros(n, dtype=np.int64)
    if fn.EVENT_ID in log:
        log = log[~is_history(log[fn.EVENT_ID])]
    if len(log) and n:
        ms = log["ms"].to_numpy() if "ms" in log else np.full(len(log), -1)
        labels = [label(t, None if m < 0 else int(m)) for t, m in zip(log["type"].astype(str), ms, strict=True)]
        tracks = log[fn.TRACK_ID].astype(str).to_numpy(dtype=object)
        keep = np.array([lab == 1 and t in embeddings for lab, t in zip(labels, tracks, strict=True)], dtype=bool)
        positives = pd.DataFrame({"user": log[fn.USER_ID].astype(str).to_numpy(dtype=object)[keep],
                                  "track": tracks[keep], "ns": _ns(log[fn.EVENT_TIMESTAMP])[keep]})  # fmt: skip
        positives = positives.sort_values("ns", kind="stable")  # the log's order among equal times
        row_users = rows[fn.USER_ID].astype(str).to_numpy(dtype=object)
        row_ns = _ns(rows[fn.EVENT_TIMESTAMP])
        wanted = pd.Series(np.arange(n)).groupby(row_users).indices  # user -> row positions
        for user, group in positives.groupby("user", sort=False):
            at = wanted.get(user)
            if at is None:
                continue
            vectors = [np.asarray(embeddings[t], dtype=np.float64) for t in group["track"]]
            # fold starts again when a vector's length differs from the sum's (another encoder): so do the runs here
            lengths = np.array([len(v) for v in vectors])
            starts = np.flatnonzero(np.r_[True, lengths[1:] != lengths[:-1]])
            sums: list[np.ndarray] = []
            for first, stop in zip(starts, [*starts[1:], len(vectors)], strict=True):
                sums.extend(np.cumsum(np.stack(vectors[first:stop]), axis=0))  # sequential float64, as fold adds
            run_start = starts[np.searchsorted(starts, np.arange(len(vectors)), side="right") - 1]
            before = np.searchsorted(group["ns"].to_numpy(), row_ns[at], side="left")  # strictly earlier events
            for position, k in zip(at, before, strict=True):
                if k > 0:
                    folded = k - run_start[k - 1]  # events in the sum (since the last restart)
                    profiles[position] = (sums[k - 1] / folded).astype(np.float32)
                    counts[position] = folded
    return pd.DataFrame({"profile": profiles, "profile_n": counts}, index=rows.index)


def _ns(stamps: pd.Series) -> np.ndarray:
    """Event times as int64 nanoseconds since the epoch, UTC."""
    return pd.to_datetime(stamps, utc=True).to_numpy(dtype="datetime64[ns]").view(np.int64)


# --- inputs and refusals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    track_id: str
    type: str
    ms: int | None
    ts: datetime  # timezone-aware

    @property
    def ts_us(self) -> int:
        return int(self.ts.timestamp() * 1_000_000)


@dataclass(frozen=True)
class EventRules:
    max_batch: int = 1000
    max_future_s: float = 300.0  # clocks disagree; beyond this an event time is a client bug
    retention_days: float = 7.0  # seen ids kept this long; older events are refused
    recent_n: int = 50  # events kept in user_activity.recent_tracks
    compact_parts: int = 64  # more parts than this at one level are merged into one part of the next level

    @property
    def retention_s(self) -> int:
        return int(self.retention_days * 86400)


class EventRefused(EncoreError):
    """The batch is refused whole; `index` and `field` name its first bad event (None for the batch)."""

    def __init__(self, code: str, message: str, index: int | None = None, field: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.index, self.field = code, message, index, field


class EventStoreUnavailable(EncoreError):
    """The store failed part-way; nothing of the batch is acknowledged, and a retry is safe."""


def check_size(n: int, rules: EventRules) -> None:
    if n > rules.max_batch:
        raise EventRefused("batch_too_large", f"{n} events; at most {rules.max_batch} per batch")
    if n == 0:
        raise EventRefused("empty_batch", "no events in the batch")


def check_events(events: Sequence[Event], rules: EventRules, known_tracks: Callable[[list[str]], set[str]]) -> None:
    """Raise EventRefused for the first bad event; `known_tracks(ids)` returns the ids the store holds."""
    now = time.time()
    first: EventRefused | None = None
    for i, event in enumerate(events):
        ts = event.ts.timestamp()
        if ts > now + rules.max_future_s:
            first = EventRefused("invalid_event", f"ts is more than {rules.max_future_s:g} s in the future", i, "ts")
        elif ts < now - rules.retention_s:
            message = f"ts is older than the {rules.retention_days:g}-day retention of event ids"
            first = EventRefused("invalid_event", message, i, "ts")
        if first is not None:
            break
    checked = events if first is None else events[: first.index]
    known = known_tracks(list(dict.fromkeys(e.track_id for e in checked))) if checked else set()
    for i, event in enumerate(checked):
        if event.track_id not in known:
            raise EventRefused("unknown_track", f"track {event.track_id[:64]!r} is not in the store", i, "track_id")
    if first is not None:
        raise first


def check_batch(events: Sequence[Event], rules: EventRules, known_tracks: Callable[[list[str]], set[str]]) -> None:
    check_size(len(events), rules)
    check_events(events, rules, known_tracks)


# --- aggregates ------------------------------------------------------------------------------------------


@dataclass
class Activity:
    """A listener's aggregates, as committed in the store (`encode`) and pushed to user_activity."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TYPES, 0))
    recent: list[tuple[int, str, str]] = field(default_factory=list)  # (ts_us, track_id, type), newest first
    profile_sum: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    profile_n: int = 0
    stamp_us: int = 0  # event_timestamp of the last pushed row; strictly increasing
    # Not stored: the stamp as loaded, and the user_activity fields the folds since then changed (what a SQLite
    # online write needs to write when the online row is known to hold the loaded state: `_write_online`).
    loaded_stamp_us: int = field(default=0, compare=False, repr=False)
    changed: set[str] = field(default_factory=set, compare=False, repr=False)

    # Stored as one binary record (decoding ~440 JSON docs per batch, and encoding them again, was ~15% of a
    # batch): a header, the float64 profile sum (exact), then the recent events' times, types and track ids
    # (track ids are store keys, [A-Za-z0-9_.:-]: no newline). Older JSON records are still read.
    _MAGIC = b"EA1\n"
    _HEADER = struct.Struct("<4s4qqqII")  # magic, counts by type, profile_n, stamp_us, len(recent), dim

    @classmethod
    def decode(cls, blob: str | bytes | None) -> Activity:
        if not blob:
            return cls()
        if isinstance(blob, str) or not blob.startswith(cls._MAGIC):
            return cls._from_json(blob)
        _, *counts, profile_n, stamp, n, dim = cls._HEADER.unpack_from(blob)
        at = cls._HEADER.size
        profile = np.frombuffer(blob, "<f8", dim, at).copy()
        at += 8 * dim
        times = np.frombuffer(blob, "<i8", n, at).tolist()
        at += 8 * n
        types = [EVENT_TYPES[t] for t in blob[at : at + n]]
        tracks = blob[at + n :].decode().split("\n") if n else []
        recent = list(zip(times, tracks, types, strict=True))
        return cls(dict(zip(EVENT_TYPES, counts, strict=True)), recent, profile, profile_n, stamp, stamp)

    def encode(self) -> bytes:
        n, dim = len(self.recent), len(self.profile_sum)
        counts = [self.counts[t] for t in EVENT_TYPES]
        header = self._HEADER.pack(self._MAGIC, *counts, self.profile_n, self.stamp_us, n, dim)
        times = struct.pack(f"<{n}q", *[r[0] for r in self.recent])
        types = bytes([_TYPE_CODE[r[2]] for r in self.recent])
        tracks = "\n".join(r[1] for r in self.recent).encode()
        return b"".join((header, self.profile_sum.astype("<f8").tobytes(), times, types, tracks))

    @classmethod
    def _from_json(cls, text: str | bytes) -> Activity:
        doc = json.loads(text)
        profile = np.frombuffer(base64.b64decode(doc["profile_sum"]), dtype="<f8").copy()
        recent = [tuple(r) for r in doc["recent"]]
        return cls(doc["counts"], recent, profile, doc["profile_n"], doc["stamp"], doc["stamp"])

    def fold(self, event: Event, embedding: np.ndarray | None, recent_n: int) -> None:
        self.counts[event.type] += 1
        self.changed.add(_COUNT_FIELD[event.type])
        if event.type in ("play", "skip"):
            self.changed.add("skip_rate")
        entry = (event.ts_us, event.track_id, event.type)
        before = len(self.recent)
        bisect.insort_right(self.recent, entry, key=_newest_first)  # after equal times: arrival order is kept
        if before != recent_n or self.recent[-1] is not entry:  # else the new event fell off: the list is as it was
            self.changed.update(("recent_tracks", "recent_types"))
        del self.recent[recent_n:]
        if embedding is not None and label(event.type, event.ms) == 1:
            if len(self.profile_sum) != len(embedding):  # first vector, or the encoder changed: start again
                self.profile_sum, self.profile_n = np.zeros(len(embedding), np.float64), 0
            self.profile_sum = self.profile_sum + embedding
            self.profile_n += 1
            self.changed.update(("profile", "profile_n"))

    def features(self, only: set[str] | None = None) -> dict[str, Any]:
        """The user_activity feature values: all of them, or the fields in `only`."""
        out: dict[str, Any] = {}
        if only is None or "recent_tracks" in only:
            out["recent_tracks"] = [r[1] for r in self.recent]
        if only is None or "recent_types" in only:
            out["recent_types"] = [r[2] for r in self.recent]
        for kind in EVENT_TYPES:
            name = _COUNT_FIELD[kind]
            if only is None or name in only:
                out[name] = self.counts[kind]
        if only is None or "skip_rate" in only:
            plays, skips = self.counts["play"], self.counts["skip"]
            out["skip_rate"] = float(skips / (plays + skips)) if plays + skips else 0.0
        if only is None or "profile" in only:
            out["profile"] = (self.profile_sum / max(self.profile_n, 1)).astype(np.float32)
        if only is None or "profile_n" in only:
            out["profile_n"] = self.profile_n
        return out

    def row(self, user_id: str) -> dict[str, Any]:
        stamp = pd.Timestamp(self.stamp_us, unit="us", tz="UTC")
        return {fn.USER_ID: user_id, **self.features(), fn.EVENT_TIMESTAMP: stamp, fn.CREATED_TIMESTAMP: stamp}


_COUNT_FIELD = {t: f"n_{t}" for t in EVENT_TYPES}


def _newest_first(entry: tuple[int, str, str]) -> int:
    return -entry[0]


# --- where seen ids and aggregates live: Redis in the stack, SQLite in the embedded default ---------------


class _RedisState:
    """Seen ids (keys with an expiry) and aggregates (one record per listener) in Redis; the listeners'
    `user_activity` rows are written in the same MULTI/EXEC as the ids and aggregates (encore.online_write), and
    every key read is WATCHed from `begin` to that EXEC: if anyone else wrote one meanwhile (a writer whose
    lock expired), EXEC fails, nothing is written and the batch is answered 503. So aggregates never lose an
    update or roll back, even when the `events` lock does not hold."""

    def __init__(self, url: str, prefix: str, project: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.prefix, self.project = prefix, project
        self._pipe: Any = None

    def _seen_key(self, event_id: str) -> str:
        return f"{self.prefix}:seen:{event_id}"

    def _user_key(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}"

    def begin(self, ids: list[str], users: list[str]) -> tuple[set[str], dict[str, Activity]]:
        """The ids already seen and the listeners' aggregates, WATCHed until `commit`."""
        self.abort()
        keys = [self._seen_key(i) for i in ids] + [self._user_key(u) for u in users]
        self._pipe = pipe = self.client.pipeline(transaction=True)
        pipe.watch(*keys)
        values = pipe.mget(keys) if keys else []
        seen = {i for i, v in zip(ids, values, strict=False) if v is not None}
        docs = values[len(ids) :]
        return seen, {u: Activity.decode(v) for u, v in zip(users, docs, strict=True)}

    def commit(self, new_ids: list[str], activities: dict[str, Activity], retention_s: int) -> bool:
        """Ids, aggregates and online rows in one MULTI/EXEC; True: the online rows are written too."""
        from encore.online_write import redis_hsets

        pipe, self._pipe = self._pipe, None
        try:
            pipe.multi()  # MULTI/EXEC: all of it or none
            for event_id in new_ids:
                pipe.set(self._seen_key(event_id), 1, ex=retention_s)
            for user_id, activity in activities.items():
                pipe.set(self._user_key(user_id), activity.encode())
            users = list(activities)
            rows = [activities[u].row(u) for u in users]
            stamps = [activities[u].stamp_us for u in users]
            redis_hsets(pipe, self.project, fn.USER_ACTIVITY, users, rows, stamps)
            pipe.execute()  # WatchError when a watched key changed: nothing written
        finally:
            pipe.reset()
        return True

    def abort(self) -> None:
        if self._pipe is not None:
            self._pipe.reset()
            self._pipe = None

    def delete_user(self, user_id: str) -> None:
        self.client.delete(self._user_key(user_id))

    def close(self) -> None:
        self.abort()
        self.client.close()


class _SqliteState:
    """events.db beside the SQLite online store; WAL, synchronous=FULL: a commit is on disk when it returns."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA cache_size={-CACHE_KIB}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS seen (event_id TEXT PRIMARY KEY, at INTEGER NOT NULL)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS seen_at ON seen (at)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS activity (user_id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
        self._lock = threading.Lock()  # one connection, shared by a process's threads

    def begin(self, ids: list[str], users: list[str]) -> tuple[set[str], dict[str, Activity]]:
        return self.seen(ids), self.load(users)

    def abort(self) -> None:
        pass

    def seen(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(f"SELECT event_id FROM seen WHERE event_id IN ({marks})", chunk)
                found.update(r[0] for r in rows)
        return found

    def load(self, users: list[str]) -> dict[str, Activity]:
        docs: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(users), 500):
                chunk = users[start : start + 500]
                marks = ",".join("?" * len(chunk))
                docs.update(self.conn.execute(f"SELECT user_id, doc FROM activity WHERE user_id IN ({marks})", chunk))
        return {u: Activity.decode(docs.get(u)) for u in users}

    def commit(self, new_ids: list[str], activities: dict[str, Activity], retention_s: int) -> bool:
        """Ids and aggregates in one transaction of events.db; False: the online rows are still to be written."""
        now = int(time.time())
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", [(i, now) for i in new_ids])
                docs = [(u, activities[u].encode()) for u in sorted(activities)]  # in key order: fewer page visits
                # an upsert rewrites the record in place; INSERT OR REPLACE deleted and re-inserted the row and its
                # key (~2x the CPU, and more pages for the commit to write)
                self.conn.executemany(
                    "INSERT INTO activity VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET doc = excluded.doc", docs
                )
                self.conn.execute("DELETE FROM seen WHERE at < ?", (now - retention_s,))  # the retention
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return False

    def delete_user(self, user_id: str) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM activity WHERE user_id = ?", (user_id,))

    def close(self) -> None:
        self.conn.close()


class _SqliteOnline:
    """The listeners' `user_activity` rows in the SQLite online store, written in Feast's layout
    (encore.online_write), changed fields only where that is known to be safe.

    Feast's SQLite layout holds one stored row per (listener, field); writing all 9 of ~440 listeners' rows was
    half the CPU of a batch, while one event changes 3 to 6 of them. So beside the rows, the same file holds
    `encore_activity_online` (user_id -> the aggregates' stamp_us whose rows are online), written in the same
    transaction as the rows. A listener whose stamp there equals the stamp of the aggregates the batch loaded has
    exactly those aggregates online: only the fields the batch's folds changed are written, with the very bytes
    a full write (or Feast's push) would store for them; the fields left alone already hold those bytes. Any
    other listener (new, deleted, a lost or interleaved online write, a repeat after a failure) gets every field,
    which also repairs the row. What differs from a full write: a field left alone keeps the event_ts/created_ts
    (whole seconds) of the write that last changed it; Feast reads no TTL for this view and Encore reads no
    per-field time. The rows of `user_activity` are written only here (and removed by `delete_user`).
    """

    TABLE = "encore_activity_online"

    def __init__(self, path: Path, project: str):
        self.project = project
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        # WAL (kept by the file from then on): the ranker's reads no longer wait for these frequent commits, and a
        # commit appends to one log instead of writing a rollback journal; synchronous stays FULL (the default).
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(f"PRAGMA cache_size={-CACHE_KIB}")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.TABLE} (user_id TEXT PRIMARY KEY, stamp INTEGER NOT NULL) WITHOUT ROWID"
        )

    def write(self, activities: dict[str, Activity]) -> None:
        """Every listener's row, in one transaction: all of it or none."""
        from encore.online_write import sqlite_execute, sqlite_params

        users = sorted(activities, key=lambda u: (len(u.encode()), u))  # ~ the rows' entity key order (length, then id)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            online: dict[str, int] = {}
            for start in range(0, len(users), 500):
                chunk = users[start : start + 500]
                marks = ",".join("?" * len(chunk))
                online.update(self.conn.execute(f"SELECT * FROM {self.TABLE} WHERE user_id IN ({marks})", chunk))
            rows = []
            for user in users:
                activity = activities[user]
                known = online.get(user) == activity.loaded_stamp_us
                rows.append(activity.features(activity.changed if known else None))
            stamps = [activities[u].stamp_us for u in users]
            params = sqlite_params(fn.USER_ACTIVITY, users, rows, stamps)
            sqlite_execute(self.conn, self.project, fn.USER_ACTIVITY, params)
            self.conn.executemany(
                f"INSERT INTO {self.TABLE} VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET stamp = excluded.stamp",
                zip(users, stamps, strict=True),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def forget(self, user_id: str) -> None:
        self.conn.execute(f"DELETE FROM {self.TABLE} WHERE user_id = ?", (user_id,))

    def close(self) -> None:
        self.conn.close()


# --- the log ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestResult:
    accepted: int  # new events written
    duplicates: int  # ids seen before (or twice in the batch), ignored
    users: int  # listeners whose features were pushed


@dataclass
class _Ticket:
    events: list[Event]
    result: IngestResult | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class DeleteResult:
    events: int  # offline rows removed
    parts_rewritten: int
    had_features: bool


class EventLog:
    """Ingest, compaction and deletion of listening events over one Store (see the module docstring).

    `embeddings(track_ids)` returns the content vectors of the known tracks (id -> vector); the embedder gives
    its TrackTable. Thread-safe: a process lock plus the store's cross-process `events` lock.
    """

    def __init__(
        self,
        store: Store,
        rules: EventRules | None = None,
        embeddings: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
    ):
        self.store, self.rules = store, rules or EventRules()
        self.embeddings = embeddings or (lambda ids: {})
        s = store.settings
        if s.online == "redis":
            self.state: _RedisState | _SqliteState = _RedisState(s.redis_url, f"{s.project}:events", s.project)
        else:
            self.state = _SqliteState(s.data_dir / "events.db")
        self.folder = s.offline_dir / fn.EVENTS
        self._lock = threading.Lock()  # the writer of this process (see ingest)
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._compacting = threading.Lock()
        self._online: _SqliteOnline | None = None  # the SQLite online store, for the user_activity rows

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock, self.store.write_lock(LOCK_NAME, timeout_s=MAINTENANCE_LOCK_S):
            yield

    @contextmanager
    def _compaction(self) -> Iterator[None]:
        with self._compacting, self.store.write_lock(COMPACT_LOCK_NAME, timeout_s=MAINTENANCE_LOCK_S):
            yield

    def ingest(self, events: Sequence[Event], known_tracks: Callable[[list[str]], set[str]]) -> IngestResult:
        """Check, then durably write a batch; EventRefused (nothing written) or EventStoreUnavailable (retry)."""
        try:
            check_batch(events, self.rules, known_tracks)
        except EventRefused:
            raise
        except Exception as error:  # the track check reads the store
            raise EventStoreUnavailable(f"track check failed: {type(error).__name__}") from error
        ticket = _Ticket(list(events))
        with self._queue_lock:
            self._queue.append(ticket)
        with self._lock:  # group commit: whoever holds the lock writes every batch queued by then
            if ticket.result is None and ticket.error is None:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._write_group(group)
        if ticket.error is not None:
            raise EventStoreUnavailable(f"event store unavailable: {type(ticket.error).__name__}") from ticket.error
        assert ticket.result is not None
        return ticket.result

    def _write_group(self, group: list[_Ticket]) -> None:
        try:
            with self.store.write_lock(LOCK_NAME, timeout_s=INGEST_LOCK_S):
                results = self._write([t.events for t in group])
        except Exception as error:  # redis / sqlite / OS errors, a failed lock: 503 for all, the clients retry
            log.warning("event batches not written: %s: %s", type(error).__name__, error, exc_info=True)
            for ticket in group:
                ticket.error = error
            return
        for ticket, result in zip(group, results, strict=True):
            ticket.result = result

    def _write(self, batches: list[list[Event]]) -> list[IngestResult]:
        """Write batches as one (their order kept: a repeat in a later batch is that batch's duplicate)."""
        events = [e for batch in batches for e in batch]
        ids = list(dict.fromkeys(e.event_id for e in events))
        users = list(dict.fromkeys(e.user_id for e in events))
        try:
            seen, activities = self.state.begin(ids, users)
            fresh: dict[str, Event] = {}
            accepted = []
            for batch in batches:
                before = len(fresh)
                for event in batch:  # the first occurrence of an unseen id wins
                    if event.event_id not in seen and event.event_id not in fresh:
                        fresh[event.event_id] = event
                accepted.append(len(fresh) - before)
            new = list(fresh.values())
            if new:
                self._append_part(new)
            vectors = self.embeddings(list({e.track_id for e in new})) if new else {}
            for event in sorted(new, key=lambda e: e.ts_us):
                activities[event.user_id].fold(event, vectors.get(event.track_id), self.rules.recent_n)
            now_us = int(time.time() * 1_000_000)
            for activity in activities.values():
                activity.stamp_us = max(now_us, activity.stamp_us + 1)
            online_written = self.state.commit(list(fresh), activities, self.rules.retention_s)
        finally:
            self.state.abort()
        if not online_written:
            self._write_online(activities)
        return [
            IngestResult(n, len(batch) - n, len({e.user_id for e in batch}))
            for batch, n in zip(batches, accepted, strict=True)
        ]

    def _write_online(self, activities: dict[str, Activity]) -> None:
        """The listeners' user_activity rows into the online store (Redis did it in its commit)."""
        s = self.store.settings
        if s.online == "sqlite":  # Feast's own layout, written directly (encore.online_write: Feast's push is slow)
            if self._online is None:
                self._online = _SqliteOnline(s.sqlite_path, s.project)
            self._online.write(activities)
        else:  # a Redis cluster: Feast's push (its writer handles the slots)
            self.store.push_online(fn.USER_ACTIVITY, pd.DataFrame([a.row(u) for u, a in activities.items()]))

    def _append_part(self, events: list[Event]) -> None:
        created = pd.Timestamp.now(tz="UTC")
        table = pa.table(
            {
                "event_id": [e.event_id for e in events],
                "user_id": [e.user_id for e in events],
                "track_id": [e.track_id for e in events],
                "type": [e.type for e in events],
                "ms": [-1 if e.ms is None else e.ms for e in events],
                fn.EVENT_TIMESTAMP: [e.ts for e in events],
                fn.CREATED_TIMESTAMP: [created] * len(events),
            },
            schema=EVENT_SCHEMA,
        )
        self._publish(table, self.folder / _part_name(0))

    def _publish(self, table: pa.Table, final: Path) -> None:
        """Write a part durably: temp file in the folder (hidden from readers), fsync, rename, fsync the folder."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.tmp"
        try:
            with open(tmp, "wb") as handle:
                pq.write_table(table, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        folder = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def write_history(self, history: pd.DataFrame) -> None:
        """Log the bootstrap's history (event_id, user_id, track_id, type, ms, event_timestamp; ids of
        HISTORY_PREFIX) as one part, HISTORY_PART, replacing the one an earlier bootstrap wrote (one rename)."""
        if not is_history(history[fn.EVENT_ID]).all():
            raise ValueError(f"history event ids must start with {HISTORY_PREFIX!r}")
        frame = history.assign(**{fn.CREATED_TIMESTAMP: pd.Timestamp.now(tz="UTC")})
        table = pa.Table.from_pandas(frame[EVENT_SCHEMA.names], schema=EVENT_SCHEMA, preserve_index=False)
        with self._exclusive():
            self._publish(table, self.folder / HISTORY_PART)

    # --- reading, compaction, deletion ---

    def parts(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.parquet") if not p.name.startswith("."))

    def read(self) -> pd.DataFrame:
        """Every logged event once (the first row per event_id), oldest first."""
        parts = self.parts()
        if not parts:
            return EVENT_SCHEMA.empty_table().to_pandas()
        frame = pa.concat_tables([pq.read_table(p, schema=EVENT_SCHEMA) for p in parts]).to_pandas()
        frame = frame.sort_values([fn.CREATED_TIMESTAMP], kind="stable").drop_duplicates("event_id", keep="first")
        return frame.sort_values([fn.EVENT_TIMESTAMP, "event_id"], kind="stable").reset_index(drop=True)

    def levels(self) -> dict[int, list[Path]]:
        """Parts by level: L0 is one ingested batch; a level-L part merges compact_parts parts of level L-1."""
        found: dict[int, list[Path]] = {}
        for part in self.parts():
            if part.name == HISTORY_PART:  # written whole by the bootstrap, replaced whole, never merged
                continue
            level = int(part.name[1]) if part.name[:1] == "L" and part.name[1:2].isdigit() else 0
            found.setdefault(level, []).append(part)
        return found

    def needs_compaction(self) -> bool:
        return any(len(parts) > self.rules.compact_parts for parts in self.levels().values())

    def compact(self) -> int:
        """Merge each level holding more than compact_parts parts into one part of the next level (dropping
        repeated event ids); returns the parts merged. A log-structured merge: at 5,000 events/s in batches of
        500 the folder holds at most ~compact_parts parts per level, and each event is rewritten once per level.

        The merged part is published before its inputs are removed, so readers see every event at every moment
        (perhaps twice for an instant; readers keep the first row per event_id anyway).
        """
        merged_parts = 0
        with self._compaction():
            for level in range(MAX_LEVEL):
                parts = self.levels().get(level, [])
                if len(parts) <= self.rules.compact_parts:
                    continue
                table = pa.concat_tables([pq.read_table(p, schema=EVENT_SCHEMA) for p in parts])
                frame = table.to_pandas().sort_values(fn.CREATED_TIMESTAMP, kind="stable")
                frame = frame.drop_duplicates("event_id", keep="first").sort_values(fn.EVENT_TIMESTAMP, kind="stable")
                merged = pa.Table.from_pandas(frame, schema=EVENT_SCHEMA, preserve_index=False)
                self._publish(merged, self.folder / _part_name(level + 1))
                for part in parts:
                    part.unlink(missing_ok=True)
                merged_parts += len(parts)
        return merged_parts

    def delete_user(self, user_id: str) -> DeleteResult:
        """Remove a listener's events and features: offline rows, aggregates, the online user_activity row.

        Seen event ids stay until their retention ends (they name no listener), so a replayed deleted event is
        still recognised as a repeat. Runs under both locks: no ingest or compaction interleaves.
        """
        try:
            with self._exclusive(), self._compaction():
                removed, rewritten = 0, 0
                for part in self.parts():
                    table = pq.read_table(part, schema=EVENT_SCHEMA)
                    mask = np.asarray(table.column("user_id").to_numpy(zero_copy_only=False) == user_id)
                    if not mask.any():
                        continue
                    removed += int(mask.sum())
                    rewritten += 1
                    kept = table.filter(pa.array(~mask))
                    if kept.num_rows:
                        self._publish(kept, part)  # same name: the rename replaces the part atomically
                    else:
                        part.unlink()
                had = bool(self.store.get_activity([user_id]))
                self.state.delete_user(user_id)
                self.store.delete_online(fn.USER_ACTIVITY, [user_id])
                if self.store.settings.online == "sqlite":
                    if self._online is None:
                        self._online = _SqliteOnline(self.store.settings.sqlite_path, self.store.settings.project)
                    self._online.forget(user_id)
                return DeleteResult(removed, rewritten, had)
        except Exception as error:
            if isinstance(error, StoreError | OSError) or type(error).__module__.startswith(("redis", "sqlite3")):
                raise EventStoreUnavailable(f"event store unavailable: {type(error).__name__}") from error
            raise

    def close(self) -> None:
        self.state.close()
        if self._online is not None:
            self._online.close()


def _part_name(level: int) -> str:
    return f"L{level}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
