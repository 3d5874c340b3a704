"""Read Feast's online store in its own format, without importing feast (about 240 MiB and seconds per process).

Writes still go through Feast (encore.store.Store); every serving read comes here. The layouts, from Feast
0.67's source (feast/infra/online_stores/sqlite.py, redis.py, helpers.py, infra/key_encoding_utils.py):

- Entity key (entity_key_serialization_version 3, one string join key):
  <u32 1> <u32 STRING=2> <u32 len(join key)> join key <u32 STRING=2> <u32 len(id)> id, little-endian.
- SQLite: table "<project>_<view>" with one row per (entity_key, feature_name); `value` is a serialized
  feast.types.Value protobuf. An entity with no row in a view reads as None for each of its features.
- Redis: one hash per entity at key entity_key + project; field murmur3_32("<view>:<feature>") as 4 bytes
  little-endian -> serialized Value, plus "_ts:<view>" -> the view's event timestamp. A missing field reads
  as None.
- Value: a protobuf oneof; Encore's dtypes use string_val (2), int64_val (4), float_val (6), string_list_val
  (12), int64_list_val (14) and float_list_val (16), the lists in a message's field 1.

Feature views have no TTL (features.py: timedelta(0)), so Feast applies no max-age filter on reads either.
`read_rows` gives the python values Feast's `get_online_features(...).to_dict()` gives (tests compare both on
SQLite and Redis); `read_columns` gives the same values as numpy columns, decoded vectorized for bulk loads.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mmh3
import numpy as np
import pyarrow as pa

from encore import feature_names as fn
from encore.store import REDIS_KINDS, StoreError, redis_client

if TYPE_CHECKING:
    from encore.store import StoreSettings

Blob = bytes | None
Blobs = Sequence[Blob]  # a list, or a 1-d object array
STRING_TYPE = 2  # feast.types.Value.ValueType.STRING
SQLITE_CHUNK = 900  # ids per "IN (...)" query (under SQLite's oldest variable limit of 999)
SQLITE_SCAN_FROM = 20_000  # from this many ids on, one scan of the table beats per-id index probes
REDIS_CHUNK = 1000  # HMGETs per pipeline round trip

# Value's oneof tags (field number << 3 | wire type) for the dtypes Encore writes.
_TAG_STRING, _TAG_INT64, _TAG_FLOAT = 0x12, 0x20, 0x35
_TAG_INT64_LIST, _TAG_FLOAT_LIST = b"\x72", b"\x82\x01"


# --- keys --------------------------------------------------------------------------------------------------


def entity_key(join_key: str, entity_id: str) -> bytes:
    """Feast's serialize_entity_key (version 3) for one string join key."""
    key, value = join_key.encode(), entity_id.encode()
    return struct.pack("<III", 1, STRING_TYPE, len(key)) + key + struct.pack("<II", STRING_TYPE, len(value)) + value


def redis_field(view: str, feature: str) -> bytes:
    """Feast's _mmh3: the hash field of one feature of one view."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def sqlite_table(project: str, view: str) -> str:
    return f'"{project}_{view}"'  # project names are [A-Za-z0-9_] (StoreSettings), view names are ours


# --- one value -----------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _repeated(message: bytes, packed_kind: str) -> list:
    """Field 1 of a FloatList ('f') or Int64List ('q'), packed or not."""
    values: list = []
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        if tag == 0x0A:  # packed
            size, pos = _varint(message, pos)
            chunk = message[pos : pos + size]
            pos += size
            if packed_kind == "f":
                values.extend(np.frombuffer(chunk, "<f4").tolist())
            else:
                at = 0
                while at < len(chunk):
                    value, at = _varint(chunk, at)
                    values.append(_signed(value))
        elif tag == 0x0D and packed_kind == "f":
            values.append(struct.unpack_from("<f", message, pos)[0])
            pos += 4
        elif tag == 0x08 and packed_kind == "q":
            value, pos = _varint(message, pos)
            values.append(_signed(value))
        else:
            raise StoreError(f"online list value with protobuf tag {tag}: not one Encore writes")
    return values


def _strings(message: bytes) -> list[str]:
    values, pos = [], 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        if tag != 0x0A:
            raise StoreError(f"online string list with protobuf tag {tag}: not one Encore writes")
        size, pos = _varint(message, pos)
        values.append(message[pos : pos + size].decode())
        pos += size
    return values


def decode_value(blob: Blob) -> Any:
    """A serialized feast Value as the python value Feast's to_dict() gives (None when unset)."""
    if not blob:
        return None
    tag, pos = _varint(blob, 0)
    if tag == _TAG_STRING:
        size, pos = _varint(blob, pos)
        return blob[pos : pos + size].decode()
    if tag == _TAG_INT64:
        return _signed(_varint(blob, pos)[0])
    if tag == _TAG_FLOAT:
        return struct.unpack_from("<f", blob, pos)[0]
    if tag == 0x62:  # string_list_val (12): field 1 of a StringList, one length-delimited entry per string
        size, pos = _varint(blob, pos)
        return _strings(blob[pos : pos + size])
    if tag in (0x72, 0x82):  # int64_list_val (14), float_list_val (16; a two-byte tag)
        size, pos = _varint(blob, pos)
        return _repeated(blob[pos : pos + size], "q" if tag == 0x72 else "f")
    raise StoreError(f"online value with protobuf tag {tag}: not a type Encore writes")


# --- readers -------------------------------------------------------------------------------------------------


class OnlineReader:
    """Raw Value blobs per (view, feature) for a list of unique entity ids, aligned with them (None: no value)."""

    def __init__(self, settings: StoreSettings):
        self.settings = settings

    def blobs(self, join_key: str, ids: Sequence[str], views: Sequence[str]) -> dict[str, dict[str, Blobs]]:
        raise NotImplementedError


class SqliteReader(OnlineReader):
    """One read-only connection per thread (services read from worker threads)."""

    def __init__(self, settings: StoreSettings):
        super().__init__(settings)
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            path = self.settings.sqlite_path
            try:
                conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10, check_same_thread=False)
            except sqlite3.Error as error:
                raise StoreError(f"online store {path}: {error}") from error
            self._local.conn = conn
        return conn

    def blobs(self, join_key: str, ids: Sequence[str], views: Sequence[str]) -> dict[str, dict[str, Blobs]]:
        """One row per entity: SQLite pivots the (entity, feature) rows itself, so Python touches each entity once."""
        slots = {entity_key(join_key, i): n for n, i in enumerate(ids)}
        if len(slots) != len(ids):
            raise ValueError("entity ids must be unique")
        result: dict[str, dict[str, Blobs]] = {}
        conn = self._connection()
        for view in views:
            names = fn.VIEW_FIELDS[view]
            pivot = ", ".join("max(CASE WHEN feature_name = ? THEN value END)" for _ in names)
            query = f"SELECT entity_key, {pivot} FROM {sqlite_table(self.settings.project, view)}"
            keys = list(slots)
            if len(keys) >= SQLITE_SCAN_FROM:
                batches = [(query + " GROUP BY entity_key", list(names))]
            else:
                batches = [
                    (
                        f"{query} WHERE entity_key IN ({','.join('?' * len(chunk))}) GROUP BY entity_key",
                        [*names, *chunk],
                    )
                    for chunk in (keys[s : s + SQLITE_CHUNK] for s in range(0, len(keys), SQLITE_CHUNK))
                ]
            columns = [np.full(len(ids), None, dtype=object) for _ in names]
            try:
                for sql, params in batches:
                    rows = conn.execute(sql, params).fetchall()
                    if not rows:
                        continue
                    found, *values = zip(*rows, strict=True)
                    positions = np.fromiter((slots.get(k, -1) for k in found), np.int64, count=len(found))
                    asked = positions >= 0  # a scan also meets entities nobody asked for
                    for column, fetched in zip(columns, values, strict=True):
                        column[positions[asked]] = np.array(fetched, dtype=object)[asked]
            except sqlite3.Error as error:
                raise StoreError(f"online store {self.settings.sqlite_path}, view {view}: {error}") from error
            result[view] = dict(zip(names, columns, strict=True))
        return result


class RedisReader(OnlineReader):
    """HMGET per entity over redis-py pipelines (one round trip per REDIS_CHUNK ids; per node on a cluster)."""

    def __init__(self, settings: StoreSettings):
        super().__init__(settings)
        self._client = redis_client(settings, connect_timeout_s=2, timeout_s=30)

    def blobs(self, join_key: str, ids: Sequence[str], views: Sequence[str]) -> dict[str, dict[str, Blobs]]:
        names = [(view, name) for view in views for name in fn.VIEW_FIELDS[view]]
        fields = [redis_field(view, name) for view, name in names]
        suffix = self.settings.project.encode()
        replies: list[list[Blob]] = []
        for start in range(0, len(ids), REDIS_CHUNK):
            with self._client.pipeline(transaction=False) as pipe:
                for entity_id in ids[start : start + REDIS_CHUNK]:
                    pipe.hmget(entity_key(join_key, entity_id) + suffix, fields)
                replies.extend(pipe.execute())
        result: dict[str, dict[str, Blobs]] = {view: {} for view in views}
        for position, (view, name) in enumerate(names):
            result[view][name] = [reply[position] for reply in replies]
        return result


def open_reader(settings: StoreSettings) -> OnlineReader:
    return RedisReader(settings) if settings.online in REDIS_KINDS else SqliteReader(settings)


# --- rows (python values) --------------------------------------------------------------------------------------


def read_rows(reader: OnlineReader, join_key: str, ids: Sequence[str], views: Sequence[str]) -> dict[str, dict]:
    """Per-entity dicts of python values; an entity with no value in any of the views is left out."""
    blobs = reader.blobs(join_key, ids, views)
    result: dict[str, dict[str, Any]] = {}
    for n, entity_id in enumerate(ids):
        row = {name: decode_value(column[n]) for view in views for name, column in blobs[view].items()}
        if any(value is not None for value in row.values()):
            result[entity_id] = row
    return result


def read_view_rows(
    reader: OnlineReader, join_key: str, ids: Sequence[str], views: Sequence[str]
) -> dict[str, dict[str, dict]]:
    """view -> entity id -> dict of python values, from one read of all the views (one round trip on Redis: the
    views of an entity share its hash); an entity with no value in a view is left out of that view."""
    blobs = reader.blobs(join_key, ids, views)
    result: dict[str, dict[str, dict]] = {view: {} for view in views}
    for view in views:
        for n, entity_id in enumerate(ids):
            row = {name: decode_value(column[n]) for name, column in blobs[view].items()}
            if any(value is not None for value in row.values()):
                result[view][entity_id] = row
    return result


# --- columns (numpy, vectorized) --------------------------------------------------------------------------------

_SCALAR_FILL = {"String": "", "Int64": -1, "Float32": np.nan}  # for a view a track lacks; see `present`
_SCALAR_KIND = {"String": object, "Int64": np.int64, "Float32": np.float32}


@dataclass(frozen=True)
class Columns:
    """Features of the found entities (a value in at least one view), in request order."""

    ids: list[str]
    columns: dict[str, np.ndarray]  # scalar field -> (n,), array field -> (n, width)
    present: dict[str, np.ndarray]  # view -> (n,) bool
    misfits: list[str]  # ids whose content arrays did not have the table's width (served as missing content)


class _Packed:
    """The non-empty blobs of a column joined into one buffer, with each blob's start and length."""

    def __init__(self, blobs: Blobs):
        lengths = np.fromiter((len(b) if b else 0 for b in blobs), np.int64, count=len(blobs))
        self.present = lengths > 0
        self.lengths = lengths[self.present]
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.buf = np.frombuffer(b"".join(b for b in blobs if b), np.uint8)


def _varints(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """The varints spanning buf[starts:ends] as int64, or None when a span is not exactly one varint."""
    if len(starts) == 0:
        return np.zeros(0, np.int64)
    continued = np.concatenate([[0], np.cumsum(buf >= 0x80)])
    spans = ends - starts
    if (spans < 1).any() or (spans > 10).any() or ((continued[ends] - continued[starts]) != spans - 1).any():
        return None
    result = np.zeros(len(starts), np.uint64)
    for j in range(int(spans.max())):
        live = j < spans
        byte = buf[np.where(live, starts + j, 0)].astype(np.uint64) & np.uint64(0x7F)
        result |= np.where(live, byte << np.uint64(7 * j), np.uint64(0))
    return result.view(np.int64)


def _scalar_fast(packed: _Packed, dtype: str) -> np.ndarray | None:
    """Values of the present rows of a scalar column, or None when the layout is not the usual one."""
    buf, starts, lengths = packed.buf, packed.starts, packed.lengths
    if len(starts) == 0:
        return np.zeros(0, _SCALAR_KIND[dtype])
    if dtype == "Float32":
        if not ((lengths == 5).all() and (buf[starts] == _TAG_FLOAT).all()):
            return None
        return buf.reshape(-1, 5)[:, 1:].copy().view("<f4").ravel()
    if dtype == "Int64":
        if not (buf[starts] == _TAG_INT64).all():
            return None
        return _varints(buf, starts + 1, starts + lengths)
    if dtype == "String":
        if not (buf[starts] == _TAG_STRING).all():
            return None
        first = buf[starts + 1].astype(np.int64)
        header = np.where(first < 0x80, 2, 3)
        second = buf[np.minimum(starts + 2, len(buf) - 1)].astype(np.int64)
        size = np.where(header == 2, first, (first & 0x7F) | (second << 7))
        if ((header == 3) & (second >= 0x80)).any() or (header + size != lengths).any():
            return None  # strings of 16 KiB or more: the slow path
        keep = np.ones(len(buf), bool)
        keep[starts] = keep[starts + 1] = False
        keep[(starts + 2)[header == 3]] = False
        offsets = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
        binary = pa.Array.from_buffers(
            pa.large_binary(), len(size), [None, pa.py_buffer(offsets), pa.py_buffer(buf[keep])]
        )
        return binary.cast(pa.large_string()).to_numpy(zero_copy_only=False)
    return None


def _scalar_column(blobs: Blobs, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(values with the fill where absent, present mask) of one scalar field."""
    packed = _Packed(blobs)
    values = _scalar_fast(packed, dtype)
    if values is None:
        values = np.array([decode_value(b) for b in blobs if b], dtype=_SCALAR_KIND[dtype])
    out = np.full(len(blobs), _SCALAR_FILL[dtype], dtype=_SCALAR_KIND[dtype])
    out[packed.present] = values
    return out, packed.present


def _list_header(tag: bytes, width: int, item_bytes: int) -> bytes:
    """The bytes before the items of a packed list Value whose items take `item_bytes` each."""
    payload = width * item_bytes
    inner = b"\x0a" + _varint_bytes(payload)
    return tag + _varint_bytes(len(inner) + payload) + inner


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _array_column(blobs: Blobs, dtype: str, width: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(n, width) matrix, mask of rows that hold a value of that width, and the width.

    `width` None: the most common length among present rows decides. Rows in the usual layout (packed,
    floats, or int64 ids below 128 as one byte each) are decoded as one block; the rest one by one.
    """
    floats = dtype == "Array(Float32)"
    kind, item_bytes, tag = (np.float32, 4, _TAG_FLOAT_LIST) if floats else (np.int64, 1, _TAG_INT64_LIST)
    n = len(blobs)
    decoded: dict[int, list] = {}  # rows off the fast path, decoded one by one
    if width is None:
        counts: dict[int, int] = {}
        for b in blobs:
            if b:
                counts[len(b)] = counts.get(len(b), 0) + 1
        width = 0
        if counts:  # the commonest blob length; its item count is the width (checked through the header)
            common = max(counts, key=counts.__getitem__)
            sample = decode_value(next(b for b in blobs if b and len(b) == common))
            width = len(sample)
    header = _list_header(tag, width, item_bytes)
    size = len(header) + width * item_bytes
    matrix = np.zeros((n, width), kind)
    ok = np.zeros(n, bool)
    fast = np.fromiter((b is not None and len(b) == size and b.startswith(header) for b in blobs), bool, count=n)
    if fast.any():
        block = np.frombuffer(b"".join(b for b, f in zip(blobs, fast, strict=True) if f), np.uint8).reshape(-1, size)
        items = block[:, len(header) :]
        if kind is np.float32:
            matrix[fast] = items.copy().view("<f4")
            ok[fast] = True
        else:
            small = (items < 0x80).all(axis=1)  # one-byte varints: the byte is the value
            rows = np.flatnonzero(fast)
            matrix[rows[small]] = items[small]
            ok[rows[small]] = True
            for row in rows[~small]:
                decoded[row] = decode_value(blobs[row])
    for row in np.flatnonzero(~fast):
        if blobs[row]:
            decoded[row] = decode_value(blobs[row])
    for row, value in decoded.items():
        if len(value) == width:
            matrix[row] = value
            ok[row] = True
    return matrix, ok, width


def read_columns(
    reader: OnlineReader,
    ids: Sequence[str],
    dtypes: dict[str, str],
    widths: dict[str, int] | None = None,
) -> Columns:
    """Track features of `ids` (both track views) as numpy columns; ids with no value anywhere are left out.

    `widths` fixes the lengths of the array fields (those of a table being extended); a row whose array has
    another length is served as missing content and listed in `misfits`.
    """
    blobs = reader.blobs(fn.TRACK_ID, ids, fn.TRACK_VIEWS)
    columns: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    fits = np.ones(len(ids), bool)  # False where an array field has a value of another width
    for view in fn.TRACK_VIEWS:
        for name in fn.VIEW_FIELDS[view]:
            dtype = dtypes[name]
            if dtype.startswith("Array("):
                columns[name], ok, _ = _array_column(blobs[view][name], dtype, widths[name] if widths else None)
                has = np.fromiter((bool(b) for b in blobs[view][name]), bool, count=len(ids))
                fits &= ok | ~has
            else:
                columns[name], has = _scalar_column(blobs[view][name], dtype)
            present[view] = present[view] | has if view in present else has
    found = present[fn.TRACK_META] | present[fn.TRACK_CONTENT]
    present[fn.TRACK_CONTENT] = present[fn.TRACK_CONTENT] & fits
    keep = np.flatnonzero(found)
    return Columns(
        ids=[ids[i] for i in keep],
        columns={name: values[keep] for name, values in columns.items()},
        present={view: mask[keep] for view, mask in present.items()},
        misfits=[ids[i] for i in np.flatnonzero(~fits)],
    )
