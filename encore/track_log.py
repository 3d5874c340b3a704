"""The track write log: which tracks Encore wrote to the online store, in order, kept in the store itself.

A persisted track table (encore.track_snapshot) records the log position it was read at; a later reader asks
the log what changed since and re-reads only those tracks, so an upload pushed after the snapshot still
reaches the next table. Every track write of `encore.store.Store` appends here *after* its store write:
`record(ids)` for pushes and deletes, `record_all()` for a training snapshot (every track may have changed).
A reader takes `position()` *before* it reads the store, so any write logged at or before that position is
already in what it reads, and everything after it shows in `since(position)`.

The log also holds the store's identity (a random id made with the log): a store wiped and refilled, or
another store at the same path, has another id, so a snapshot of it is never taken for this one.

- SQLite: tables `encore_track_log` (AUTOINCREMENT: a sequence number is never reused) and `encore_store`
  in the online database.
- Redis: a stream `encore:track_log:<project>` (its ids are the positions) and `encore:store_id:<project>`.
  Both names end in the project, like Feast's own keys.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Any

from encore.store import REDIS_KINDS, StoreError, redis_client

if TYPE_CHECKING:
    from encore.store import StoreSettings

Position = tuple[int, int]  # SQLite: (seq, 0); Redis: the stream id (milliseconds, sequence)
START: Position = (0, 0)
ALL = ""  # a log entry that stands for every track (a training snapshot was written)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS encore_track_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, track_id TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS encore_store (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class TrackLog:
    """Append (writers) and read (snapshot readers) the store's track write log."""

    def __init__(self, settings: StoreSettings):
        self.settings = settings
        self._redis: Any = None

    # --- writers ---

    def record(self, track_ids: Sequence[str]) -> None:
        """These tracks were written (or deleted) online; call after the store write has returned."""
        if track_ids:
            self._append([str(t) for t in track_ids])

    def record_all(self) -> None:
        """Every track may have changed (a training snapshot): snapshots read before this are rebuilt."""
        self._append([ALL])

    def ensure(self) -> str:
        """The store's id, made now when the store has none yet."""
        if self._is_redis:
            client = self._client()
            client.set(self._id_key, uuid.uuid4().hex, nx=True)
            return client.get(self._id_key).decode()
        with self._write_connection() as conn:
            return self._ensure_sqlite(conn)

    # --- readers ---

    def store_id(self) -> str | None:
        """The store's id; None while no log-aware writer has written to it."""
        if self._is_redis:
            value = self._client().get(self._id_key)
            return value.decode() if value is not None else None
        rows = self._sqlite_read("SELECT value FROM encore_store WHERE name = 'store_id'")
        return rows[0][0] if rows else None

    def position(self) -> Position:
        """The position of the last entry (START when the log is empty)."""
        if self._is_redis:
            last = self._client().xrevrange(self._log_key, count=1)
            return _stream_position(last[0][0]) if last else START
        rows = self._sqlite_read("SELECT max(seq) FROM encore_track_log")
        return (int(rows[0][0]), 0) if rows and rows[0][0] is not None else START

    def since(self, position: Position) -> tuple[list[str] | None, Position]:
        """(track ids logged after `position`, in order; None when every track may have changed, the position
        of the last entry read)."""
        if self._is_redis:
            first = f"{position[0]}-{position[1] + 1}"
            entries = [(_stream_position(i), fields[b"t"].decode()) for i, fields in self._client().xrange(
                self._log_key, min=first
            )]  # fmt: skip
        else:
            rows = self._sqlite_read(
                "SELECT seq, track_id FROM encore_track_log WHERE seq > ? ORDER BY seq", position[0]
            )
            entries = [((int(seq), 0), track_id) for seq, track_id in rows]
        last = entries[-1][0] if entries else position
        ids = [track_id for _, track_id in entries]
        return (None if ALL in ids else list(dict.fromkeys(ids))), last

    # --- storage ---

    @property
    def _is_redis(self) -> bool:
        return self.settings.online in REDIS_KINDS

    @property
    def _log_key(self) -> str:
        return f"encore:track_log:{self.settings.project}"

    @property
    def _id_key(self) -> str:
        return f"encore:store_id:{self.settings.project}"

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = redis_client(self.settings, connect_timeout_s=2, timeout_s=10)
        return self._redis

    def _append(self, ids: list[str]) -> None:
        if self._is_redis:
            client = self._client()
            client.set(self._id_key, uuid.uuid4().hex, nx=True)
            with client.pipeline(transaction=False) as pipe:
                for track_id in ids:
                    pipe.xadd(self._log_key, {"t": track_id})
                replies = pipe.execute()
            if ALL in ids:  # entries before the last "everything" are covered by it
                client.xtrim(self._log_key, minid=replies[-1], approximate=False)
            return
        with self._write_connection() as conn:
            self._ensure_sqlite(conn)
            conn.executemany("INSERT INTO encore_track_log (track_id) VALUES (?)", [(t,) for t in ids])
            if ALL in ids:
                conn.execute(
                    "DELETE FROM encore_track_log WHERE seq < "
                    "(SELECT max(seq) FROM encore_track_log WHERE track_id = ?)",
                    (ALL,),
                )

    @staticmethod
    def _ensure_sqlite(conn: sqlite3.Connection) -> str:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO encore_store VALUES ('store_id', ?)", (uuid.uuid4().hex,))
        return conn.execute("SELECT value FROM encore_store WHERE name = 'store_id'").fetchone()[0]

    @contextmanager
    def _write_connection(self) -> Iterator[sqlite3.Connection]:
        """One transaction on the online database, committed on success; the connection is closed after."""
        path = self.settings.sqlite_path
        if not path.exists():
            raise StoreError(f"online store {path} does not exist (apply the Feast repo first)")
        conn = sqlite3.connect(path, timeout=30)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def _sqlite_read(self, sql: str, *params: Any) -> list[tuple]:
        path = self.settings.sqlite_path
        if not path.exists():  # nothing applied yet: an empty log
            return []
        try:
            with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # never written by a log-aware writer
                return []
            raise StoreError(f"online store {path}: {error}") from error


def _stream_position(entry_id: bytes | str) -> Position:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)
