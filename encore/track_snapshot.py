"""The decoded track table persisted as memory-mappable files, so a ranker starts by mapping it, not reading the store.

Reading and decoding every track from the online store takes minutes at 1M tracks (13M SQLite rows or 1M Redis
hashes). A snapshot holds the same columns encore.online_read gives, written once per host and store:

    <dir>/<project>/CURRENT              {"name": ...}: the snapshot in use
    <dir>/<project>/<name>/manifest.json  format, schema, store identity, track-log position, columns
    <dir>/<project>/<name>/ids.json       track ids, in row order
    <name>/<field>.npy                    numbers and arrays (memory-mapped: one copy per host in the page cache)
    <name>/<field>.codes.npy + .vocab.json   strings, dictionary-encoded (codes int32, vocabulary JSON)
    <name>/present.<view>.npy             whether a track has a row in each view

No pickle: JSON and .npy of plain dtypes only. A snapshot is used only when its format, the track schema
(encore.feature_names) and the store (kind, project, place and the store's own id, encore.track_log) are
the ones this process serves; then the tracks written since its log position are re-read from the store and a
new snapshot written with them. Anything else (none yet, another store or schema, a training snapshot written
since, a file that does not read back) is logged and the table is rebuilt from the store. Every step runs
under one file lock, so the workers of a host build or update a snapshot once and map the same files.
Writers: `write_track_snapshot` (the bootstrap and the benchmark worlds, right after filling the store) and
the first ranker worker that finds no usable snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.io import atomic_path, write_json_atomic
from encore.online_read import Columns, read_columns
from encore.store import Store
from encore.track_log import Position

log = logging.getLogger(__name__)

FORMAT = 1
_STRING_DTYPE = "String"


class SnapshotError(Exception):
    """A snapshot on disk that cannot be used (it is rebuilt from the store)."""


@dataclass(frozen=True)
class Snapshot:
    """One mapped snapshot: its name (equal names, equal contents) and its columns."""

    name: str
    columns: Columns


def schema_digest() -> str:
    """The track views' fields and dtypes: a snapshot of another schema is never read as this one."""
    views = {view: [(name, fn.FIELD_DTYPES[name]) for name in fn.VIEW_FIELDS[view]] for view in fn.TRACK_VIEWS}
    return hashlib.sha256(json.dumps(views, sort_keys=True).encode()).hexdigest()[:16]


class TrackSnapshots:
    """The persisted track tables of `store` under `folder/<project>`."""

    def __init__(self, store: Store, folder: Path):
        self.store = store
        self.root = Path(folder) / store.settings.project

    # --- public ---

    def open(self) -> Snapshot:
        """The current snapshot, mapped; written first from the store when none fits, or updated with the tracks
        written since it. Falls back to the table read from the store (not shared) when writing fails."""
        with self._locked():
            manifest = self._current()
            reason = self._mismatch(manifest)
            if reason is None:
                assert manifest is not None
                changed, last = self.store.track_log.since(_position(manifest))  # before the store read
                try:
                    if changed is None:
                        reason = "a training snapshot was written to the store since"
                    elif changed:
                        return self._update(manifest, changed, last)
                    else:
                        return Snapshot(manifest["name"], self._map(manifest))
                except (OSError, ValueError, KeyError, SnapshotError) as error:
                    reason = f"it does not read back ({error})"
            log.warning("track snapshot in %s not used: %s; rebuilding it from the store", self.root, reason)
            return self._rebuild()

    def write(self) -> Snapshot:
        """Build a snapshot from the store now (after a training snapshot was written to it)."""
        self.store.track_log.ensure()  # a store id from now on: later writers append to its log
        with self._locked():
            return self._rebuild()

    # --- building ---

    def _rebuild(self) -> Snapshot:
        track_log = self.store.track_log
        store_id, position = track_log.store_id(), track_log.position()  # before the store read
        started = time.perf_counter()
        ids = self.store.offline_track_ids()
        columns = read_columns(self.store.reader, ids, fn.FIELD_DTYPES) if ids else _empty_columns()
        log.info(
            "track table read from the store: %d tracks in %.1f s", len(columns.ids), time.perf_counter() - started
        )
        return self._publish(columns, position, store_id)

    def _update(self, manifest: dict, changed: list[str], last: Position) -> Snapshot:
        """The snapshot with the `changed` tracks re-read from the store (dropped when the store lost them)."""
        base = self._map(manifest)
        widths = _widths(base)
        fresh = read_columns(self.store.reader, changed, fn.FIELD_DTYPES, widths)
        gone = set(changed)  # a set: np.isin over object arrays compares every id with every changed one
        keep = np.fromiter((t not in gone for t in base.ids), bool, count=len(base.ids))
        merged = _concat(_take(base, keep), fresh)
        log.info("track snapshot updated with %d tracks written since it (%d rows)", len(changed), len(merged.ids))
        return self._publish(merged, last, manifest["store"]["store_id"])

    def _publish(self, columns: Columns, position: Position, store_id: str | None) -> Snapshot:
        """Write `columns` as the new current snapshot and map it; on a write failure serve them unshared."""
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        manifest = {
            "format": FORMAT,
            "schema": schema_digest(),
            "store": self._store_identity(store_id),
            "position": list(position),
            "name": name,
            "n_rows": len(columns.ids),
            "created_at": time.time(),
        }
        try:
            with atomic_path(self.root / name, directory=True) as tmp:
                _write_columns(tmp, columns)
                write_json_atomic(tmp / "manifest.json", manifest)
            write_json_atomic(self.root / "CURRENT", {"name": name})
            self._remove_others(name)
            return Snapshot(name, self._map(manifest))
        except OSError as error:
            log.warning("track snapshot not written to %s (%s): this process keeps its own table", self.root, error)
            return Snapshot(f"unshared-{name}", columns)

    def _remove_others(self, keep: str) -> None:
        """Older snapshots (processes that mapped them keep their mappings; new ones map `keep`)."""
        for other in self.root.iterdir():
            if other.is_dir() and other.name != keep:
                shutil.rmtree(other, ignore_errors=True)

    # --- checking and mapping ---

    def _store_identity(self, store_id: str | None) -> dict[str, Any]:
        settings = self.store.settings
        if settings.online == "sqlite":
            where = str(settings.sqlite_path)
        else:  # host, port and db; never the password
            url = urlparse(settings.redis_url)
            where = f"{url.hostname}:{url.port or 6379}{url.path or '/0'}"
        return {"online": settings.online, "project": settings.project, "where": where, "store_id": store_id}

    def _current(self) -> dict | None:
        try:
            name = json.loads((self.root / "CURRENT").read_text())["name"]
            return json.loads((self.root / name / "manifest.json").read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _mismatch(self, manifest: dict | None) -> str | None:
        """Why `manifest` does not describe a snapshot of this store and schema (None: it does)."""
        if manifest is None:
            return "none written yet"
        if manifest.get("format") != FORMAT:
            return f"format {manifest.get('format')}, this code reads {FORMAT}"
        if manifest.get("schema") != schema_digest():
            return "written for other track fields or dtypes"
        expected = self._store_identity(self.store.track_log.store_id())
        if manifest.get("store") != expected:
            return f"written from store {manifest.get('store')}, this is {expected}"
        return None

    def _map(self, manifest: dict) -> Columns:
        folder = self.root / manifest["name"]
        n = int(manifest["n_rows"])
        ids = json.loads((folder / "ids.json").read_text())
        if not isinstance(ids, list) or len(ids) != n:
            raise SnapshotError(f"{folder}/ids.json does not hold {n} ids")
        columns: dict[str, np.ndarray] = {}
        for view in fn.TRACK_VIEWS:
            for name in fn.VIEW_FIELDS[view]:
                if fn.FIELD_DTYPES[name] == _STRING_DTYPE:
                    vocab = np.array(json.loads((folder / f"{name}.vocab.json").read_text()), dtype=object)
                    codes = _load(folder / f"{name}.codes.npy", n)
                    if len(codes) and (codes.min() < 0 or codes.max() >= len(vocab)):
                        raise SnapshotError(f"{folder}/{name}.codes.npy: codes outside the vocabulary")
                    columns[name] = vocab[codes]
                else:
                    columns[name] = _load(folder / f"{name}.npy", n)
        present = {view: _load(folder / f"present.{view}.npy", n) for view in fn.TRACK_VIEWS}
        return Columns(ids=ids, columns=columns, present=present, misfits=[])

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # one process builds; the others wait, then map what it wrote
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def write_track_snapshot(store: Store, folder: Path | None = None) -> Snapshot:
    """The writers' hook: a fresh snapshot of `store` in `folder` (default: beside the store's data)."""
    return TrackSnapshots(store, folder or default_folder(store)).write()


def ensure_track_snapshot(store: Store, folder: Path | None = None) -> Snapshot:
    """A usable snapshot of `store`: the current one (updated with later writes) or a new one."""
    store.track_log.ensure()
    return TrackSnapshots(store, folder or default_folder(store)).open()


def default_folder(store: Store) -> Path:
    return store.settings.data_dir / "track_table"


# --- files ---------------------------------------------------------------------------------------------------


def _write_columns(folder: Path, columns: Columns) -> None:
    (folder / "ids.json").write_text(json.dumps(columns.ids))
    for name, values in columns.columns.items():
        if fn.FIELD_DTYPES[name] == _STRING_DTYPE:
            codes, vocab = pd.factorize(values, use_na_sentinel=False)
            _save(folder / f"{name}.codes.npy", codes.astype(np.int32))
            (folder / f"{name}.vocab.json").write_text(json.dumps([str(v) for v in vocab]))
        else:
            _save(folder / f"{name}.npy", values)
    for view, mask in columns.present.items():
        _save(folder / f"present.{view}.npy", mask)


def _save(path: Path, values: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(values), allow_pickle=False)


def _load(path: Path, n: int) -> np.ndarray:
    # A plain ndarray over the mapping: np.memmap's subclass hooks cost time on every hot-path gather.
    values = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
    if len(values) != n:
        raise SnapshotError(f"{path} holds {len(values)} rows, the manifest {n}")
    return values


# --- columns -------------------------------------------------------------------------------------------------


def _position(manifest: dict) -> Position:
    first, second = manifest["position"]
    return int(first), int(second)


def _widths(columns: Columns) -> dict[str, int] | None:
    """The array fields' lengths, or None while no row has content (the first content row then decides)."""
    if not len(columns.ids) or not columns.present[fn.TRACK_CONTENT].any():
        return None
    return {name: int(columns.columns[name].shape[1]) for name in fn.TRACK_CONTENT_ARRAYS}


def _take(columns: Columns, keep: np.ndarray) -> Columns:
    rows = np.flatnonzero(keep)
    return Columns(
        ids=[columns.ids[i] for i in rows],
        columns={name: np.asarray(values[rows]) for name, values in columns.columns.items()},
        present={view: np.asarray(mask[rows]) for view, mask in columns.present.items()},
        misfits=[],
    )


def _concat(first: Columns, second: Columns) -> Columns:
    columns = {}
    for name, values in first.columns.items():
        other = second.columns[name]
        if values.ndim == 2 and values.shape[1] != other.shape[1]:  # a table without content rows has width 0
            values = np.zeros((len(values), other.shape[1]), values.dtype)
        columns[name] = np.concatenate([values, other])
    return Columns(
        ids=first.ids + second.ids,
        columns=columns,
        present={view: np.concatenate([mask, second.present[view]]) for view, mask in first.present.items()},
        misfits=second.misfits,
    )


def _empty_columns() -> Columns:
    kinds = {"String": object, "Int64": np.int64, "Float32": np.float32}
    columns = {}
    for view in fn.TRACK_VIEWS:
        for name in fn.VIEW_FIELDS[view]:
            dtype = fn.FIELD_DTYPES[name]
            if dtype.startswith("Array("):
                columns[name] = np.zeros((0, 0), np.float32 if dtype == "Array(Float32)" else np.int64)
            else:
                columns[name] = np.zeros(0, kinds[dtype])
    return Columns(ids=[], columns=columns, present={v: np.zeros(0, bool) for v in fn.TRACK_VIEWS}, misfits=[])
