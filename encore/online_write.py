"""Write rows of a view into Feast's online store in its own format, without Feast's push (encore.online_read reads).

Why: Feast's push of one 500-event batch's `user_activity` rows (~440 listeners) cost ~0.55 s of CPU here
(per-value conversion of the 200-float profiles, typeguard checks, a registry read per push, one SQLite upsert
per field per row in a Python loop): ~80% of the ingest path (docs/events.md, "Ingest speed"). Encoding the
same protobuf bytes directly costs a few ms, and on Redis the rows can join the events commit's MULTI/EXEC.

The bytes are Feast 0.67's (layouts in encore/online_read.py): a `Value` protobuf per field; SQLite upserts one
row per (entity_key, feature_name) with `value_text` for scalars and `event_ts`/`created_ts` as Feast's adapter
writes them (whole epoch seconds); Redis
HSETs the murmur3 field names plus `_ts:<view>` (a protobuf `Timestamp`). tests/store/test_online_write.py writes
the same rows through Feast and through this module and compares the stored bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from encore import feature_names as fn
from encore.online_read import _varint_bytes, entity_key, redis_field, sqlite_table


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _BYTES[value]
    return _varint_bytes(value + (1 << 64) if value < 0 else value)  # int64 varints: two's complement, ten bytes


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


_BYTES = [bytes([v]) for v in range(0x80)]
_STRING_ENTRIES: dict[str, bytes] = {}  # str -> its entry in a StringList: track ids and types recur in every row


def encode_value(dtype: str, value: Any) -> bytes:
    """One feast `Value` message (dtype as str(Field.dtype)) as Feast serializes it."""
    encoder = _ENCODERS.get(dtype)
    if encoder is None:
        raise ValueError(f"dtype {dtype!r}: not one Encore writes")
    return encoder(value)


def _encode_int(value: Any) -> bytes:
    value = int(value)
    return _SMALL_INTS[value] if 0 <= value < 128 else b"\x20" + _varint(value)


def _string_entry(value: str) -> bytes:
    entry = _STRING_ENTRIES.get(value)
    if entry is None:
        if len(_STRING_ENTRIES) > 200_000:  # bounded: a catalogue's ids, not every string ever seen
            _STRING_ENTRIES.clear()
        entry = _STRING_ENTRIES[value] = _delimited(b"\x0a", str(value).encode())
    return entry


def _encode_strings(value: Any) -> bytes:
    known = _STRING_ENTRIES.get
    return _delimited(b"\x62", b"".join([known(v) or _string_entry(v) for v in value]))


def _encode_floats(value: Any) -> bytes:
    items = np.asarray(value, dtype="<f4").tobytes()
    return _delimited(b"\x82\x01", _delimited(b"\x0a", items) if items else b"")


def _encode_ints(value: Any) -> bytes:
    items = b"".join(_varint(int(v)) for v in value)
    return _delimited(b"\x72", _delimited(b"\x0a", items) if items else b"")


_SMALL_INTS = [b"\x20" + bytes([v]) for v in range(128)]
_ENCODERS = {
    "String": lambda value: _delimited(b"\x12", str(value).encode()),
    "Int64": _encode_int,
    "Float32": lambda value: b"\x35" + struct.pack("<f", float(value)),
    "Array(String)": _encode_strings,
    "Array(Float32)": _encode_floats,
    "Array(Int64)": _encode_ints,
}


_F32 = struct.Struct("<f")
# Feast's value_text of each dtype from (value, its encoded Value): str() of scalars (a Float32 as the float32
# value read back, from the Value's 4 bytes), None for lists.
_TEXTS: dict[str, Callable[[Any, bytes], str | None]] = {
    "String": lambda value, blob: str(value),
    "Int64": lambda value, blob: str(int(value)),
    "Float32": lambda value, blob: str(_F32.unpack_from(blob, 1)[0]),
    "Array(String)": lambda value, blob: None,
    "Array(Float32)": lambda value, blob: None,
    "Array(Int64)": lambda value, blob: None,
}


assert set(_TEXTS) == set(_ENCODERS)


def _timestamp_proto(stamp_us: int) -> bytes:
    """google.protobuf.Timestamp (seconds, nanos) as Feast's Redis writer stores `_ts:<view>`."""
    seconds, nanos = divmod(stamp_us, 1_000_000)
    out = b"\x08" + _varint(seconds) if seconds else b""
    return out + (b"\x10" + _varint(nanos * 1000) if nanos else b"")


def encoded_rows(view: str, rows: Sequence[Mapping[str, Any]]) -> list[list[bytes]]:
    """Per row, the encoded value of every field of the view (fn.VIEW_FIELDS order)."""
    types = [fn.FIELD_DTYPES[name] for name in fn.VIEW_FIELDS[view]]
    names = fn.VIEW_FIELDS[view]
    return [[encode_value(t, row[n]) for t, n in zip(types, names, strict=True)] for row in rows]


_UPSERT = (
    "INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES {values}"
    " ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, value_text = excluded.value_text,"
    " event_ts = excluded.event_ts, created_ts = excluded.created_ts"
)
_ROWS_PER_STATEMENT = 150  # 6 parameters a row: 900, under SQLite's oldest limit of 999 variables a statement


def sqlite_params(view: str, ids: Sequence[str], rows: Sequence[Mapping[str, Any]],
                  stamps_us: Sequence[int]) -> list[Any]:  # fmt: skip
    """The upsert parameters (6 a stored row, flat) of the rows: one stored row per field a row holds, in the
    view's field order. A row may hold only some of the view's fields (the others are left as stored)."""
    key_name = fn.VIEW_ENTITY_KEY[view]
    fields = [(name, _ENCODERS[fn.FIELD_DTYPES[name]], _TEXTS[fn.FIELD_DTYPES[name]]) for name in fn.VIEW_FIELDS[view]]
    seconds: dict[int, int] = {}  # a batch's stamps fall in a second or two
    params: list[Any] = []
    for entity_id, row, stamp in zip(ids, rows, stamps_us, strict=True):
        key = entity_key(key_name, entity_id)
        naive = seconds.get(stamp // 1_000_000)
        if naive is None:  # Feast's registered sqlite3 adapter: int(timestamp()) of the naive-UTC time
            utc = datetime.fromtimestamp(stamp // 1_000_000, UTC).replace(tzinfo=None)
            naive = seconds[stamp // 1_000_000] = int(utc.timestamp())
        for name, encode, text in fields:
            if name in row:
                blob = encode(row[name])
                params += (key, name, blob, text(row[name], blob), naive, naive)
    return params


def sqlite_execute(conn: Any, project: str, view: str, params: Sequence[Any]) -> None:
    """Run the upserts of `sqlite_params` on `conn`, inside the caller's transaction. Many rows a statement
    (multi-row VALUES): a statement per stored row cost ~5 us of CPU each, most of the online write."""
    table = sqlite_table(project, view)
    step = 6 * _ROWS_PER_STATEMENT
    for start in range(0, len(params), step):
        chunk = params[start : start + step]
        conn.execute(_upsert_sql(table, len(chunk) // 6), chunk)


def _upsert_sql(table: str, n_rows: int) -> str:
    key = (table, n_rows)
    sql = _SQL.get(key)
    if sql is None:
        if len(_SQL) > 64:
            _SQL.clear()
        sql = _SQL[key] = _UPSERT.format(table=table, values=",".join(["(?,?,?,?,?,?)"] * n_rows))
    return sql


_SQL: dict[tuple[str, int], str] = {}


def sqlite_upsert(conn: Any, project: str, view: str, ids: Sequence[str], rows: Sequence[Mapping[str, Any]],
                  stamps_us: Sequence[int]) -> None:  # fmt: skip
    """Upsert the rows (stamped in epoch µs) in one transaction of `conn` (a connection to the online store)."""
    params = sqlite_params(view, ids, rows, stamps_us)
    with conn:  # one transaction: every row or none
        sqlite_execute(conn, project, view, params)


def redis_hsets(pipe: Any, project: str, view: str, ids: Sequence[str], rows: Sequence[Mapping[str, Any]],
                stamps_us: Sequence[int]) -> None:  # fmt: skip
    """Queue one HSET per entity (stamped in epoch µs) on a redis-py pipeline (the caller's MULTI/EXEC decides
    atomicity)."""
    key_name = fn.VIEW_ENTITY_KEY[view]
    fields = [redis_field(view, name) for name in fn.VIEW_FIELDS[view]]
    ts_field = f"_ts:{view}".encode()
    suffix = project.encode()
    for entity_id, encoded, stamp in zip(ids, encoded_rows(view, rows), stamps_us, strict=True):
        mapping = dict(zip(fields, encoded, strict=True))
        mapping[ts_field] = _timestamp_proto(stamp)
        pipe.hset(entity_key(key_name, entity_id) + suffix, mapping=mapping)
