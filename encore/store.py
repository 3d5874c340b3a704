"""Feast access for Encore: register definitions, write training outputs, push uploads, read features.

`import feast` takes seconds (and ~240 MiB), so it is imported lazily inside `Store`, for writes only: reads go
through encore.online_read, which reads Feast's online format directly. Importing this module is cheap.
The ranker's hot path, an in-process copy of track features, is `encore.track_table.TrackTable`.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import math
import os
import re
import sqlite3
import string
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from encore import feature_names as fn
from encore.errors import EncoreError
from encore.settings import PROJECT_ROOT, EncoreSettings

if TYPE_CHECKING:
    from feast import FeatureStore

    from encore.online_read import OnlineReader
    from encore.track_log import TrackLog

log = logging.getLogger(__name__)

FEATURE_REPO = PROJECT_ROOT / "feature_repo"
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "feast"
DEFAULT_CODEBOOK_SIZE = 32  # TASTE's K; token ids must lie in [0, codebook_size)

OnlineKind = Literal["sqlite", "redis", "redis_cluster"]
REDIS_KINDS = ("redis", "redis_cluster")
_PROJECT_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # Feast's rule, and safe inside a Redis SCAN pattern

# Feast dtype (as str) -> parquet type; the offline parts all share one schema per view, so a folder of
# parts reads back as one table.
_ARROW_TYPE = {
    "String": pa.string(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Array(Float32)": pa.list_(pa.float32()),
    "Array(Int64)": pa.list_(pa.int64()),
    "Array(String)": pa.list_(pa.string()),
}
_TIMESTAMP = pa.timestamp("us", tz="UTC")
FLOAT32_MAX = float(np.finfo(np.float32).max)


class StoreError(EncoreError):
    """The feature store refused an operation or holds something unexpected."""


class InvalidTrackError(StoreError):
    """A pushed or materialized track (or frame) is malformed; nothing was written."""


# --- Settings ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSettings:
    """Where the store lives; built from ENCORE_FEAST_* and ENCORE_REDIS_URL by `encore.settings` (`.store()`)."""

    data_dir: Path = DEFAULT_DATA_DIR
    project: str = "encore"
    online: OnlineKind = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).resolve())
        if not _PROJECT_RE.match(self.project):
            raise StoreError(f"project name {self.project!r}: use letters, digits and '_' only")
        if self.online not in ("sqlite", *REDIS_KINDS):
            raise StoreError(f"ENCORE_FEAST_ONLINE={self.online!r}: expected 'sqlite', 'redis' or 'redis_cluster'")

    @property
    def offline_dir(self) -> Path:
        return self.data_dir / "offline"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "online.db"

    def feast_redis_connection(self) -> str:
        """ENCORE_REDIS_URL (redis://[user:password@]host:port/db) in Feast's "host:port,k=v" form."""
        url = urlparse(self.redis_url)
        if url.scheme not in ("redis", "rediss"):
            raise StoreError(f"ENCORE_REDIS_URL={self.redis_url!r}: expected redis://host:port/db")
        parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
        db = url.path.lstrip("/")
        if db and self.online == "redis_cluster" and int(db) != 0:
            raise StoreError(f"ENCORE_REDIS_URL={self.redis_url!r}: a Redis Cluster has database 0 only")
        if db and self.online != "redis_cluster":
            parts.append(f"db={int(db)}")
        if url.username:
            parts.append(f"username={unquote(url.username)}")
        if url.password:
            parts.append(f"password={unquote(url.password)}")
        if url.scheme == "rediss":
            parts.append("ssl=true")
        return ",".join(parts)


def redis_client(settings: StoreSettings, *, connect_timeout_s: float, timeout_s: float) -> Any:
    """A redis-py client for the store's Redis: `RedisCluster` (seeded by the URL's node; it learns the others
    and follows failovers) for redis_cluster, a plain `Redis` otherwise."""
    import redis

    if settings.online == "redis_cluster":
        return redis.RedisCluster.from_url(
            settings.redis_url, socket_connect_timeout=connect_timeout_s, socket_timeout=timeout_s
        )
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=connect_timeout_s, socket_timeout=timeout_s)


# --- Definitions ---------------------------------------------------------------------------------------


def import_feast() -> None:
    """Import feast without letting it import torch (its torch_wrapper imports torch whenever it can: ~300 MiB
    and seconds in a process that only serves ONNX). Encore uses none of Feast's tensor helpers. A process that
    already holds torch (training) imports feast as is."""
    if "feast" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` now raises ImportError
    try:
        import feast  # noqa: F401
        import feast.torch_wrapper  # noqa: F401 - records torch as unavailable, once
    finally:
        del sys.modules["torch"]


def load_definitions(offline_dir: Path) -> ModuleType:
    """Execute feature_repo/features.py afresh and point its parquet sources at `offline_dir`.

    A fresh module per store keeps two stores (say, two tests) from sharing mutable Feast objects.
    """
    import_feast()
    spec = importlib.util.spec_from_file_location("encore_feature_repo", FEATURE_REPO / "features.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.events_source.file_options.uri = str(offline_dir / fn.EVENTS)
    for view in (module.user_profile_fv, module.track_meta_fv, module.track_content_fv, module.user_activity_fv):
        batch_source = view.batch_source
        batch_source.file_options.uri = str(offline_dir / view.name)
        declared = tuple((f.name, str(f.dtype)) for f in view.features)
        expected = tuple((name, fn.FIELD_DTYPES[name]) for name in fn.VIEW_FIELDS[view.name])
        if declared != expected:  # the two places names (and dtypes) live must agree
            raise StoreError(f"{view.name}: features.py declares {declared}, feature_names says {expected}")
    return module


def _feast_objects(defs: ModuleType) -> list[Any]:
    return [
        defs.user,
        defs.track,
        defs.user_profile_source,
        defs.track_meta_source,
        defs.track_content_source,
        defs.track_meta_push_source,
        defs.track_content_push_source,
        defs.user_activity_source,
        defs.user_activity_push_source,
        defs.events_source,
        defs.user_profile_fv,
        defs.user_activity_fv,
        defs.track_meta_fv,
        defs.track_content_fv,
        defs.ranker_v1,
    ]


# --- Validation and frame building ---------------------------------------------------------------------


def _check_keys(values: Mapping[str, Any], expected: Sequence[str], what: str) -> None:
    missing = [k for k in expected if k not in values]
    unknown = sorted(set(values) - set(expected))
    if missing or unknown:
        raise InvalidTrackError(f"{what}: missing fields {missing}, unknown fields {unknown}")


def _check_value(name: str, dtype: str, value: Any) -> Any:
    """One python value checked against a Feast dtype, returned in the form the frame stores."""
    if dtype == "String":
        if not isinstance(value, str):
            raise InvalidTrackError(f"{name}: expected str, got {type(value).__name__}")
        return value
    if dtype == "Int64":
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InvalidTrackError(f"{name}: expected int, got {type(value).__name__}")
        return int(value)
    if dtype == "Float32":
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise InvalidTrackError(f"{name}: expected a number, got {type(value).__name__}")
        try:
            number = float(value)
        except OverflowError:  # an int too large for a double
            number = math.inf
        if not (math.isfinite(number) and abs(number) <= FLOAT32_MAX):
            raise InvalidTrackError(f"{name}: {value!r} is not finite in float32")
        return float(value)
    if dtype in ("Array(Float32)", "Array(Int64)"):
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence | np.ndarray):
            raise InvalidTrackError(f"{name}: expected a 1-d sequence, got {type(value).__name__}")
        array = np.asarray(value)
        if array.ndim != 1 or array.size == 0:
            raise InvalidTrackError(f"{name}: expected a non-empty 1-d sequence, got shape {array.shape}")
        if dtype == "Array(Int64)":
            if array.dtype.kind not in "iu":
                raise InvalidTrackError(f"{name}: expected integers, got dtype {array.dtype}")
            return array.astype(np.int64)
        if array.dtype.kind not in "iuf":
            raise InvalidTrackError(f"{name}: expected numbers, got dtype {array.dtype}")
        with np.errstate(over="ignore"):  # an overflow becomes inf, which the next check rejects
            array32 = array.astype(np.float32)
        if not np.isfinite(array32).all():
            raise InvalidTrackError(f"{name}: contains NaN or inf (or overflows float32)")
        return array32
    raise StoreError(f"{name}: no check for Feast dtype {dtype}")


def _arrow_schema(view: Any) -> pa.Schema:
    """The parquet schema of one view's offline parts, derived from the Feast fields."""
    fields = [pa.field(fn.VIEW_ENTITY_KEY[view.name], pa.string(), nullable=False)]
    fields += [pa.field(f.name, _ARROW_TYPE[str(f.dtype)]) for f in view.features]
    fields += [pa.field(fn.EVENT_TIMESTAMP, _TIMESTAMP), pa.field(fn.CREATED_TIMESTAMP, _TIMESTAMP)]
    return pa.schema(fields)


def _frame_to_table(view: Any, frame: pd.DataFrame, now: pd.Timestamp) -> pa.Table:
    """Check a frame against a view (exact columns, no nulls, unique ids, finite floats) and type it."""
    key = fn.VIEW_ENTITY_KEY[view.name]
    required = [key, *fn.VIEW_FIELDS[view.name]]
    optional = [fn.EVENT_TIMESTAMP, fn.CREATED_TIMESTAMP]
    missing = [c for c in required if c not in frame.columns]
    unknown = sorted(set(frame.columns) - set(required) - set(optional))
    if missing or unknown:
        raise InvalidTrackError(f"{view.name} frame: missing columns {missing}, unknown columns {unknown}")
    frame = frame.reset_index(drop=True)
    for column in optional:
        if column not in frame.columns:
            frame[column] = now
    if frame[key].duplicated().any():
        dupes = frame.loc[frame[key].duplicated(), key].head(5).tolist()
        raise InvalidTrackError(f"{view.name} frame: duplicate {key} values, e.g. {dupes}")
    schema = _arrow_schema(view)
    try:
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
        raise InvalidTrackError(f"{view.name} frame: {error}") from error
    for name in schema.names:
        column = table.column(name)
        if column.null_count:
            raise InvalidTrackError(f"{view.name} frame: column {name} has {column.null_count} nulls")
        values = pc.list_flatten(column) if pa.types.is_list(column.type) else column
        if pa.types.is_floating(values.type) and not np.isfinite(values.to_numpy()).all():
            raise InvalidTrackError(f"{view.name} frame: column {name} has NaN or inf")
        if pa.types.is_list(column.type) and pc.min(pc.list_value_length(column)).as_py() == 0:
            raise InvalidTrackError(f"{view.name} frame: column {name} has empty lists")
    return table


def _write_part_tmp(tmp_dir: Path, table: pa.Table) -> Path:
    """Write a parquet part to a temp file on the same filesystem (published later by os.replace)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = tmp_dir / f"{uuid.uuid4().hex}.parquet.tmp"
    pq.write_table(table, tmp_path)
    return tmp_path


def _part_name(kind: str) -> str:
    # Sortable by time; the uuid keeps parts written in the same microsecond apart.
    return f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"


def unique_ids(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


# --- Store ---------------------------------------------------------------------------------------------


class Store:
    """Encore's feature store: Feast definitions + parquet offline sources + SQLite or Redis online store.

    Meant to be shared by a process's threads, as Feast's own feature server does (its SQLite connection
    allows cross-thread use; redis-py pools connections).
    """

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or EncoreSettings().store()  # ENCORE_FEAST_*, ENCORE_REDIS_URL
        self._feast: FeatureStore | None = None
        self._defs: ModuleType | None = None
        self._init_lock = threading.Lock()
        self._ping_client: Any = None
        self._reader: OnlineReader | None = None
        self._track_log: TrackLog | None = None

    # Lazily built: constructing a Store must not import feast (services build one before they need it).
    @property
    def feast(self) -> FeatureStore:
        if self._feast is None:
            with self._init_lock:
                if self._feast is None:
                    self._defs = load_definitions(self.settings.offline_dir)
                    self._feast = self._build_feature_store()
        return self._feast

    @property
    def definitions(self) -> ModuleType:
        self.feast  # noqa: B018 - loads the definitions as a side effect
        assert self._defs is not None
        return self._defs

    def _build_feature_store(self) -> FeatureStore:
        import yaml
        from feast import FeatureStore, RepoConfig

        s = self.settings
        yaml_name = "feature_store.redis.yaml" if s.online in REDIS_KINDS else "feature_store.yaml"
        values = {"ENCORE_FEAST_PROJECT": s.project, "ENCORE_FEAST_DATA_DIR": str(s.data_dir)}
        if s.online in REDIS_KINDS:
            values["ENCORE_FEAST_REDIS"] = s.feast_redis_connection()
            values["ENCORE_FEAST_REDIS_TYPE"] = s.online  # Feast's redis_type: redis or redis_cluster
        # Our settings fill the placeholders (not the process env), so tests can run several stores.
        text = string.Template((FEATURE_REPO / yaml_name).read_text()).substitute(values)
        config = RepoConfig(**yaml.safe_load(text))
        config.repo_path = FEATURE_REPO
        s.data_dir.mkdir(parents=True, exist_ok=True)
        return FeatureStore(repo_path=str(FEATURE_REPO), config=config)

    def _view(self, name: str) -> Any:
        return {
            fn.USER_PROFILE: self.definitions.user_profile_fv,
            fn.TRACK_META: self.definitions.track_meta_fv,
            fn.TRACK_CONTENT: self.definitions.track_content_fv,
            fn.USER_ACTIVITY: self.definitions.user_activity_fv,
        }[name]

    # --- writes ---

    def apply(self) -> None:
        """Register entities, sources, views and the ranker's feature service (idempotent)."""
        for view_name in (*fn.VIEW_FIELDS, fn.EVENTS):  # Feast warns about source folders that do not exist yet
            (self.settings.offline_dir / view_name).mkdir(parents=True, exist_ok=True)
        self.feast.apply(_feast_objects(self.definitions))

    def materialize_frames(
        self,
        users: pd.DataFrame | None,
        tracks_meta: pd.DataFrame | None,
        tracks_content: pd.DataFrame | None,
        *,
        append: bool = False,
    ) -> dict[str, int]:
        """Write training outputs to the offline parquet sources and the online store; returns rows per view.

        `append=True` adds the frames to the current training snapshot instead of replacing it (for writing
        one large snapshot in chunks).

        Each frame has the entity key and every field of its view (event_timestamp/created default to
        now). All frames are checked before anything is written. The online store gets the same frame via
        write_to_online_store rather than materialize(): materialize would re-read the parquet folder
        through Feast's file offline store and keep only rows inside its [start, end) window, so rows
        stamped "now" or pushed meanwhile are easy to drop; writing the frame we hold is exact and faster.
        A view's new training snapshot replaces its previous one (base-*.parquet); pushed parts stay.
        Leave event_timestamp at its default unless you mean it: for an id written twice, Redis keeps the
        row with the newer event timestamp while SQLite keeps the last one written.
        """
        now = pd.Timestamp.now(tz="UTC")
        frames = {fn.USER_PROFILE: users, fn.TRACK_META: tracks_meta, fn.TRACK_CONTENT: tracks_content}
        given = {name: frame for name, frame in frames.items() if frame is not None}
        tables = {name: _frame_to_table(self._view(name), frame, now) for name, frame in given.items()}
        written: dict[str, int] = {}
        for name, table in tables.items():
            tmp_path = _write_part_tmp(self.settings.data_dir / ".tmp", table)
            try:
                self.feast.write_to_online_store(name, table.to_pandas())
                folder = self.settings.offline_dir / name
                folder.mkdir(parents=True, exist_ok=True)
                previous = [] if append else sorted(folder.glob("base-*.parquet"))
                os.replace(tmp_path, folder / _part_name("base"))
            finally:
                tmp_path.unlink(missing_ok=True)
            for old in previous:  # superseded training snapshots; readers keep the latest row anyway
                old.unlink(missing_ok=True)
            written[name] = table.num_rows
        if set(tables) & set(fn.TRACK_VIEWS):  # persisted track tables read before this are out of date
            self.track_log.record_all()
        return written

    def push_track(
        self,
        track_id: str,
        meta: Mapping[str, Any] | None,
        content: Mapping[str, Any],
        *,
        codebook_size: int = DEFAULT_CODEBOOK_SIZE,
    ) -> None:
        """Make a track live at once (online push) and record it for the next training run (offline part).

        Everything is validated first, so a bad input raises InvalidTrackError and writes nothing. The
        parquet parts are written to temp files, the rows pushed online, then the parts published with
        os.replace; if the push fails the parts are discarded. Re-pushing a track is an overwrite.
        """
        if not isinstance(track_id, str) or not track_id.strip():
            raise InvalidTrackError(f"track_id: expected a non-empty str, got {track_id!r}")
        rows = {fn.TRACK_CONTENT: self._checked_row(fn.TRACK_CONTENT, track_id, content)}
        if meta is not None:
            rows[fn.TRACK_META] = self._checked_row(fn.TRACK_META, track_id, meta)
        tokens = rows[fn.TRACK_CONTENT]["tokens"]
        if tokens.min() < 0 or tokens.max() >= codebook_size:
            raise InvalidTrackError(
                f"content.tokens: ids must lie in [0, {codebook_size}), got [{tokens.min()}, {tokens.max()}]"
            )
        for name in ("encoder", "encoder_revision"):
            if not rows[fn.TRACK_CONTENT][name].strip():
                raise InvalidTrackError(f"content.{name}: must not be empty (provenance of the vector)")

        now = pd.Timestamp.now(tz="UTC")
        tables = {name: _frame_to_table(self._view(name), pd.DataFrame([r]), now) for name, r in rows.items()}
        tmp_paths = {name: _write_part_tmp(self.settings.data_dir / ".tmp", t) for name, t in tables.items()}
        try:
            from feast.data_source import PushMode

            for name, table in tables.items():
                self.feast.push(fn.PUSH_SOURCE_OF_VIEW[name], table.to_pandas(), to=PushMode.ONLINE)
            self.track_log.record([track_id])  # after the write: a reader at an earlier position re-reads it
            for name, tmp_path in tmp_paths.items():
                folder = self.settings.offline_dir / name
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_path, folder / _part_name("push"))
        finally:
            for tmp_path in tmp_paths.values():
                tmp_path.unlink(missing_ok=True)

    def push_online(self, view_name: str, frame: pd.DataFrame) -> None:
        """Push rows of a push-backed view to the online store only (the caller keeps its own offline record).

        The frame holds the entity key, every field of the view and both timestamp columns. Redis skips a row whose
        event timestamp is not newer than the stored one; SQLite keeps the last written: callers that may race
        stamp rows with a per-entity increasing time and push in order (encore/events.py does both).
        """
        from feast.data_source import PushMode

        self.feast.push(fn.PUSH_SOURCE_OF_VIEW[view_name], frame, to=PushMode.ONLINE)
        if view_name in fn.TRACK_VIEWS:
            self.track_log.record(frame[fn.TRACK_ID].astype(str).tolist())

    def delete_online(self, view_name: str, entity_ids: Sequence[str]) -> None:
        """Remove the given entities' rows of one view from the online store (other views' rows stay).

        Feast has no per-entity delete, so this speaks its storage layout: the serialized entity key is the
        SQLite table's row key, and in Redis one hash per entity holds every view's fields (hashed names).
        """
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = fn.VIEW_ENTITY_KEY[view_name]
        config = self.feast.config
        version = config.entity_key_serialization_version
        keys = [EntityKey(join_keys=[key], entity_values=[Value(string_val=i)]) for i in entity_ids]
        if self.settings.online == "redis":
            import redis
            from feast.infra.online_stores.helpers import _mmh3, _redis_key

            fields = [_mmh3(f"{view_name}:{name}") for name in fn.VIEW_FIELDS[view_name]]
            fields.append(f"_ts:{view_name}".encode())
            client = redis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
            with client.pipeline(transaction=True) as pipe:
                for entity_key in keys:
                    pipe.hdel(_redis_key(self.settings.project, entity_key, version), *fields)
                pipe.execute()
            if view_name in fn.TRACK_VIEWS:
                self.track_log.record(list(entity_ids))
            return
        table = f"{self.settings.project}_{view_name}"
        with sqlite3.connect(self.settings.sqlite_path, timeout=30) as conn:
            conn.executemany(
                f'DELETE FROM "{table}" WHERE entity_key = ?',
                [(serialize_entity_key(k, entity_key_serialization_version=version),) for k in keys],
            )
        if view_name in fn.TRACK_VIEWS:
            self.track_log.record(list(entity_ids))

    def _checked_row(self, view_name: str, track_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        what = "content" if view_name == fn.TRACK_CONTENT else "meta"
        if not isinstance(values, Mapping):
            raise InvalidTrackError(f"{what}: expected a mapping, got {type(values).__name__}")
        _check_keys(values, fn.VIEW_FIELDS[view_name], what)
        row: dict[str, Any] = {fn.TRACK_ID: track_id}
        for f in self._view(view_name).features:
            row[f.name] = _check_value(f"{what}.{f.name}", str(f.dtype), values[f.name])
        return row

    def delete_track(self, track_id: str) -> bool:
        """Remove a track's rows: online (both track views) and in the offline parts (its kept pooled layers too,
        encore/track_layers.py), so neither serving nor the next training run sees it. True when the online store
        held it. A part left empty is deleted; the others are rewritten whole (encore.io.atomic_path), never half."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import compute_table_id
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        from encore.io import drop_rows

        existed = self.track_exists(track_id)
        for view_name in fn.TRACK_VIEWS:
            drop_rows(self.settings.offline_dir / view_name, fn.TRACK_ID, track_id)
        version = self.feast.config.entity_key_serialization_version
        key = EntityKey(join_keys=[fn.TRACK_ID], entity_values=[Value(string_val=track_id)])
        serialized = serialize_entity_key(key, entity_key_serialization_version=version)
        if self.settings.online in REDIS_KINDS:
            client = redis_client(self.settings, connect_timeout_s=2, timeout_s=5)
            try:
                client.delete(serialized + self.settings.project.encode())  # Feast's key: entity key + project
            finally:
                client.close()
        else:
            with sqlite3.connect(self.settings.sqlite_path, timeout=5) as conn:
                for view_name in fn.TRACK_VIEWS:
                    table_name = compute_table_id(self.settings.project, self._view(view_name))
                    conn.execute(f'DELETE FROM "{table_name}" WHERE entity_key = ?', (serialized,))
        self.track_log.record([track_id])
        from encore import track_layers

        track_layers.delete(self.settings.data_dir, track_id)  # its pooled layers, kept for codebook refits
        return existed

    # --- reads ---

    def get_users(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Profiles of the given users; ids the store does not know are absent from the result."""
        return self._read(fn.USER_ID, unique_ids(user_ids), [fn.USER_PROFILE])

    def get_activity(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Real-time listening features (user_activity) of the given users; users without events are absent."""
        return self._read(fn.USER_ID, unique_ids(user_ids), [fn.USER_ACTIVITY])

    def get_user_views(self, user_ids: Iterable[str], views: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """view -> user id -> row for user views (user_profile, user_activity) in one read: the ranker's per-request
        read of both, one round trip instead of two. Ids without a value in a view are absent from that view."""
        unknown = [v for v in views if fn.VIEW_ENTITY_KEY.get(v) != fn.USER_ID]
        if unknown:
            raise StoreError(f"not user views: {unknown}")
        from encore.online_read import read_view_rows

        return read_view_rows(self.reader, fn.USER_ID, unique_ids(user_ids), list(views))

    def get_tracks(
        self,
        track_ids: Iterable[str],
        views: Sequence[str] = fn.TRACK_VIEWS,
    ) -> dict[str, dict[str, Any]]:
        """Track features from the given views; a track with no value in any of them is absent.

        A track known to one view only (say, pushed without meta) has None for the other view's fields.
        """
        unknown = [v for v in views if v not in fn.TRACK_VIEWS]
        if unknown:
            raise StoreError(f"unknown track views {unknown}; expected some of {fn.TRACK_VIEWS}")
        return self._read(fn.TRACK_ID, unique_ids(track_ids), list(views))

    def _read(self, key: str, ids: list[str], views: list[str]) -> dict[str, dict[str, Any]]:
        from encore.online_read import read_rows

        return read_rows(self.reader, key, ids, views)

    @property
    def track_log(self) -> TrackLog:
        """Which tracks were written since a position (encore.track_log): every track write here appends to it."""
        if self._track_log is None:
            from encore.track_log import TrackLog

            self._track_log = TrackLog(self.settings)
        return self._track_log

    @property
    def reader(self) -> OnlineReader:
        """The Feast-free reader of the online store (encore.online_read): every read goes through it."""
        if self._reader is None:
            with self._init_lock:
                if self._reader is None:
                    from encore.online_read import open_reader

                    self._reader = open_reader(self.settings)
        return self._reader

    def track_exists(self, track_id: str) -> bool:
        """Whether the online store holds any feature of the track."""
        return bool(self._read(fn.TRACK_ID, [track_id], [fn.TRACK_CONTENT, fn.TRACK_META]))

    def read_offline(self, view_name: str) -> pd.DataFrame:
        """The offline rows of a view as the next training run sees them: latest row per entity."""
        key = fn.VIEW_ENTITY_KEY[view_name]
        folder = self.settings.offline_dir / view_name
        if not any(folder.glob("*.parquet")):
            columns = [key, *fn.VIEW_FIELDS[view_name], fn.EVENT_TIMESTAMP, fn.CREATED_TIMESTAMP]
            return pd.DataFrame(columns=columns)
        # pyarrow's dataset reader skips names starting with '.' or '_'; temp parts live elsewhere anyway.
        frame = pq.read_table(folder).to_pandas()
        frame = frame.sort_values([fn.EVENT_TIMESTAMP, fn.CREATED_TIMESTAMP], kind="stable")
        return frame.drop_duplicates(key, keep="last").reset_index(drop=True)

    def offline_track_ids(self) -> list[str]:
        """Every track id the offline sources hold (training snapshot plus pushes), sorted."""
        ids: set[str] = set()
        for view_name in fn.TRACK_VIEWS:
            folder = self.settings.offline_dir / view_name
            if any(folder.glob("*.parquet")):
                ids.update(pq.read_table(folder, columns=[fn.TRACK_ID]).column(0).to_pylist())
        return sorted(ids)

    # --- cross-process locks ---

    @contextmanager
    def write_lock(self, name: str, timeout_s: float = 30.0) -> Iterator[None]:
        """A lock every process using this store shares, for check-then-write (say, "is this track id free?").

        Redis: a redis-py Lock on the store's server, which expires after `timeout_s` if its holder dies.
        SQLite: an flock on a file beside the database, released by the OS if its holder dies. The file name
        is a hash of `name`: no caller input becomes a path. Raises StoreError when not acquired in time.
        """
        digest = hashlib.sha256(name.encode()).hexdigest()[:32]
        if self.settings.online in REDIS_KINDS:
            import redis

            client = redis_client(self.settings, connect_timeout_s=2, timeout_s=5)
            lock = client.lock(f"{self.settings.project}:lock:{digest}", timeout=timeout_s, blocking_timeout=timeout_s)
            if not lock.acquire():
                raise StoreError(f"lock {name!r} still held by another process after {timeout_s:.0f} s")
            try:
                yield
            finally:
                try:
                    lock.release()
                except redis.exceptions.LockError:  # expired meanwhile: another holder may own it now
                    log.warning("lock %r expired before it was released", name)
            return
        folder = self.settings.data_dir / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{digest}.lock", "a+b") as handle:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        message = f"lock {name!r} still held by another process after {timeout_s:.0f} s"
                        raise StoreError(message) from None
                    time.sleep(0.005)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- health ---

    def ping(self) -> bool:
        """Whether the online store answers (for /readyz); never raises, never imports feast."""
        try:
            if self.settings.online in REDIS_KINDS:
                if self._ping_client is None:
                    self._ping_client = redis_client(self.settings, connect_timeout_s=0.5, timeout_s=0.5)
                return bool(self._ping_client.ping())
            path = self.settings.sqlite_path
            if not path.exists():  # nothing applied yet: not ready
                return False
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5) as conn:
                conn.execute("select 1").fetchone()
            return True
        except Exception as error:  # any failure means "not reachable"; say why in the log
            log.warning("online store ping failed: %s", error)
            return False
