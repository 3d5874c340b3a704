"""The persisted track table (encore.track_snapshot) and the track write log (encore.track_log), on SQLite and Redis.

Every check compares what a table loaded from the snapshot serves with what the store serves right then: a
stale, mismatched or incomplete snapshot would serve something else.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore.store import Store, StoreSettings, redis_client
from encore.track_snapshot import TrackSnapshots, write_track_snapshot
from encore.track_table import TrackTable

EMBEDDING_DIM = 6
N_TOKENS = 3
N_TRACKS = 30


def _frames(seed: int, n: int = N_TRACKS) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"t{i}" for i in range(n)]
    meta = pd.DataFrame(
        {
            fn.TRACK_ID: ids,
            "artist_id": [f"a{i}" for i in rng.integers(0, 5, n)],
            "genre": rng.choice(["rock", "jazz", "pop", "fado"], n),
            "key": rng.integers(-1, 12, n),
            "mode": rng.integers(0, 2, n),
            "language": rng.choice(["en", "pt", "", "日本語"], n),
            "release_year": rng.integers(1950, 2026, n),
            "popularity": rng.random(n).astype(np.float32),
        }
    )
    content = pd.DataFrame(
        {
            fn.TRACK_ID: ids,
            "embedding": list(rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)),
            "tokens": list(rng.integers(0, 32, (n, N_TOKENS))),
            "encoder": "mfcc",
            "encoder_revision": f"rev-{seed}",
            "typicality": 0.5,
            "tags": rng.choice(["", "calm", "loud"], n),
        }
    )
    return meta, content


def _meta(genre: str) -> dict[str, Any]:
    return {
        "artist_id": "a9",
        "genre": genre,
        "key": 2,
        "mode": 0,
        "language": "",
        "release_year": 2026,
        "popularity": 0.0,
    }


def _content(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "embedding": rng.standard_normal(EMBEDDING_DIM).astype(np.float32),
        "tokens": rng.integers(0, 32, N_TOKENS).tolist(),
        "encoder": "mfcc",
        "encoder_revision": "upload",
        "typicality": 0.25,
        "tags": "new",
    }


def _settings(kind: str, data_dir: Path, project: str, request: pytest.FixtureRequest) -> StoreSettings:
    if kind == "redis":
        return StoreSettings(data_dir, project, "redis", request.getfixturevalue("redis_url"))
    return StoreSettings(data_dir, project, "sqlite")


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A store filled with N_TRACKS tracks and a snapshot written by the writers' hook."""
    project = f"encore_snap_{uuid.uuid4().hex[:12]}"
    store = Store(_settings(request.param, tmp_path / "feast", project, request))
    store.apply()
    store.materialize_frames(None, *_frames(1))
    write_track_snapshot(store)
    yield store
    if request.param == "redis":
        _clean_redis(store.settings)


def _clean_redis(settings: StoreSettings) -> None:
    client = redis_client(settings, connect_timeout_s=2, timeout_s=5)
    keys = list(client.scan_iter(match=f"*{settings.project}".encode(), count=1000))  # ours end in the project
    if keys:
        client.delete(*keys)


def _loaded(store: Store, folder: Path | None = None) -> TrackTable:
    table = TrackTable(
        store, miss_ttl_s=0.0, snapshots=TrackSnapshots(store, folder or store.settings.data_dir / "track_table")
    )
    table.load()
    return table


def _serves_the_store(table: TrackTable, store: Store, ids: list[str]) -> None:
    """The table holds exactly the tracks the store knows among `ids`, with the store's values."""
    expected = store.get_tracks(ids)
    assert sorted(t for t in ids if t in table) == sorted(expected)
    assert table.get(ids) == expected


def _current(store: Store, folder: Path | None = None) -> str:
    root = (folder or store.settings.data_dir / "track_table") / store.settings.project
    return json.loads((root / "CURRENT").read_text())["name"]


def test_a_snapshot_serves_what_the_store_serves(store: Store) -> None:
    written = _current(store)
    table = _loaded(store)
    ids = [f"t{i}" for i in range(N_TRACKS)]
    _serves_the_store(table, store, [*ids, "t-unknown"])
    assert _current(store) == written  # mapped as written, not rebuilt
    assert isinstance(table.lookup(ids).columns["embedding"], np.ndarray)
    assert table.lookup(ids).columns["genre"].dtype == object


def test_tracks_pushed_overwritten_or_deleted_after_the_snapshot_reach_the_next_load(store: Store) -> None:
    written = _current(store)
    store.push_track("up-1", _meta("ambient"), _content(1))  # new
    store.push_track("t3", _meta("metal"), _content(2))  # overwrite
    store.push_track("up-2", None, _content(3))  # content only
    store.delete_track("t5")
    table = _loaded(store)
    ids = [f"t{i}" for i in range(N_TRACKS)] + ["up-1", "up-2"]
    _serves_the_store(table, store, ids)
    assert "up-1" in table and "t5" not in table and table.get(["t3"])["t3"]["genre"] == "metal"
    assert _current(store) != written  # the update was written once for every later worker
    again = _loaded(store)
    _serves_the_store(again, store, ids)


def test_a_loaded_table_picks_up_pushes_on_reload_and_keeps_its_rows_when_nothing_changed(store: Store) -> None:
    table = _loaded(store)
    generation = table.generation
    table.load()
    assert table.generation == generation  # same snapshot: rows and encoded inputs stay valid
    store.push_track("t7", _meta("dub"), _content(4))
    table.load()
    assert table.get(["t7"])["t7"]["genre"] == "dub" and table.generation != generation


def test_a_training_snapshot_written_since_rebuilds_the_table(store: Store) -> None:
    meta, content = _frames(2, n=N_TRACKS + 5)
    store.materialize_frames(None, meta, content)
    table = _loaded(store)
    _serves_the_store(table, store, meta[fn.TRACK_ID].tolist())
    assert table.get(["t0"])["t0"]["encoder_revision"] == "rev-2"


def test_a_snapshot_of_another_store_is_never_used(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Same project and snapshot folder, other store (another place, or the same place wiped and refilled)."""
    folder = store.settings.data_dir / "track_table"
    other_settings = _settings(store.settings.online, tmp_path / "other", store.settings.project, request)
    if store.settings.online == "redis":  # the same Redis place: wipe it
        _clean_redis(store.settings)
    other = Store(other_settings)
    other.apply()
    meta, content = _frames(3)
    other.materialize_frames(None, meta, content)  # the same log position the snapshot was read at
    table = _loaded(other, folder)
    _serves_the_store(table, other, meta[fn.TRACK_ID].tolist())
    assert table.get(["t0"])["t0"]["encoder_revision"] == "rev-3"


def test_a_wiped_and_refilled_sqlite_store_is_a_different_store(tmp_path: Path) -> None:
    settings = StoreSettings(tmp_path / "feast", "encore_wiped", "sqlite")
    first = Store(settings)
    first.apply()
    first.materialize_frames(None, *_frames(1))
    write_track_snapshot(first)
    shutil.rmtree(settings.offline_dir)
    settings.sqlite_path.unlink()
    refilled = Store(settings)
    refilled.apply()
    meta, content = _frames(4)
    refilled.materialize_frames(None, meta, content)  # log position (1, 0) again, as when the snapshot was read
    table = _loaded(refilled)
    _serves_the_store(table, refilled, meta[fn.TRACK_ID].tolist())


@pytest.mark.parametrize("damage", ["schema", "format", "codes", "ids", "missing file"])
def test_a_damaged_or_mismatched_snapshot_is_rebuilt(store: Store, damage: str) -> None:
    root = store.settings.data_dir / "track_table" / store.settings.project
    folder = root / _current(store)
    manifest = json.loads((folder / "manifest.json").read_text())
    store.push_track("t2", _meta("salsa"), _content(5))  # so that a snapshot used as is would be stale
    if damage in ("schema", "format"):
        manifest[damage] = "other" if damage == "schema" else 99
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "codes":
        np.save(folder / "genre.codes.npy", np.full(N_TRACKS, 10_000, np.int32))
    elif damage == "ids":
        (folder / "ids.json").write_text(json.dumps(["t0"]))
    else:
        (folder / "embedding.npy").unlink()
    table = _loaded(store)
    _serves_the_store(table, store, [f"t{i}" for i in range(N_TRACKS)])
    assert table.get(["t2"])["t2"]["genre"] == "salsa"


def test_the_log_orders_writes_and_an_all_entry_covers_earlier_ones(store: Store) -> None:
    log = store.track_log
    start = log.position()
    store.push_track("up-a", None, _content(6))
    store.push_track("up-b", None, _content(7))
    store.push_track("up-a", None, _content(8))
    changed, last = log.since(start)
    assert changed == ["up-a", "up-b"] and last == log.position() and last > start
    assert log.since(last) == ([], last)
    store.materialize_frames(None, *_frames(5))
    assert log.since(start)[0] is None and log.since(last)[0] is None
    assert log.store_id() is not None


def test_a_folder_it_cannot_write_falls_back_to_the_store(store: Store, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    table = TrackTable(store, snapshots=TrackSnapshots(store, blocked))
    table.load()
    _serves_the_store(table, store, [f"t{i}" for i in range(N_TRACKS)])


def test_tables_loaded_from_one_snapshot_share_a_content_key_until_their_rows_differ(store: Store) -> None:
    first, second = _loaded(store), _loaded(store)
    n = len(first)
    assert first.content_key(n) is not None and first.content_key(n) == second.content_key(n)
    store.push_track("up-k", None, _content(9))
    assert first.refresh(["up-k"]) == ["up-k"]  # appended in this worker only
    assert first.content_key(n + 1) is None and first.content_key(n) == second.content_key(n)
    assert TrackTable(store).content_key(0) is None  # a table read from the store is hashed instead


def test_a_load_of_given_ids_is_not_mistaken_for_the_snapshot(store: Store) -> None:
    table = _loaded(store)
    table.load(["t0", "t1"])  # an explicit subset read from the store
    assert len(table) == 2 and table.content_key(2) is None
    table.load()  # the snapshot again (same name on disk): every track, not the subset kept
    _serves_the_store(table, store, [f"t{i}" for i in range(N_TRACKS)])
