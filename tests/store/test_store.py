"""encore.store against real Feast: SQLite in a temp dir and a real Redis (6379, or one started here)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore.settings import EncoreSettings
from encore.store import InvalidTrackError, Store, StoreError, StoreSettings
from encore.track_table import TrackTable
from tests.conftest import free_port

EMBEDDING_DIM = 8
N_LAYERS = 12


# --- fixtures -----------------------------------------------------------------------------------------


def _frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    users = pd.DataFrame(
        {
            fn.USER_ID: ["u0", "u1", "u2"],
            "country": ["SE", "BR", ""],
            "age": [31, -1, 19],
            "gender": ["f", "", "m"],
            "n_plays": [120, 3, 45],
            "n_tracks": [40, 2, 30],
        }
    )
    track_ids = [f"t{i}" for i in range(5)]
    meta = pd.DataFrame(
        {
            fn.TRACK_ID: track_ids,
            "artist_id": ["a0", "a0", "a1", "a2", "a3"],
            "genre": ["rock", "rock", "jazz", "pop", "folk"],
            "key": [0, 5, 11, -1, 7],
            "mode": [1, 0, 1, -1, 0],
            "language": ["en", "en", "", "pt", "sv"],
            "release_year": [1999, 2004, 1965, 2021, 2012],
            "popularity": rng.random(5).astype(np.float32),
        }
    )
    content = pd.DataFrame(
        {
            fn.TRACK_ID: track_ids,
            "embedding": list(rng.standard_normal((5, EMBEDDING_DIM)).astype(np.float32)),
            "tokens": list(rng.integers(0, 32, (5, N_LAYERS))),
            "encoder": "mfcc",
            "encoder_revision": "mfcc-v1+kmeans32-abc",
            "typicality": 0.5,
            "tags": "",
        }
    )
    return users, meta, content


@pytest.fixture(scope="module", params=["sqlite", "redis", "redis_cluster"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One applied and materialized store per backend, with a unique project (keys cleaned up after)."""
    online = request.param
    project = f"encore_test_{uuid.uuid4().hex[:12]}"
    data_dir = tmp_path_factory.mktemp(f"feast_{online}")
    if online == "redis":
        settings = StoreSettings(data_dir, project, "redis", request.getfixturevalue("redis_url"))
    elif online == "redis_cluster":
        settings = StoreSettings(data_dir, project, "redis_cluster", request.getfixturevalue("redis_cluster").url)
    else:
        settings = StoreSettings(data_dir, project, "sqlite")
    store = Store(settings)
    store.apply()
    store.materialize_frames(*_frames())
    yield store
    if online in ("redis", "redis_cluster"):
        from encore.store import redis_client

        client = redis_client(settings, connect_timeout_s=2, timeout_s=5)
        # Feast's keys end in the project name; the unique name makes this pattern ours alone.
        keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
        if keys:
            client.delete(*keys)


def _new_content(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "embedding": rng.standard_normal(EMBEDDING_DIM).astype(np.float32),
        "tokens": rng.integers(0, 32, N_LAYERS).tolist(),
        "encoder": "mfcc",
        "encoder_revision": "mfcc-v1+kmeans32-abc",
        "typicality": 0.5,
        "tags": "",
    }


def _new_meta() -> dict[str, Any]:
    return {
        "artist_id": "a9",
        "genre": "ambient",
        "key": 2,
        "mode": 0,
        "language": "",
        "release_year": 2026,
        "popularity": 0.0,
    }


def _offline_parts(store: Store) -> list[Path]:
    return sorted(store.settings.data_dir.rglob("*.parquet*"))


def _as_float32(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float32)]


# --- writes and reads ---------------------------------------------------------------------------------


def test_materialized_frames_read_back_equal(store: Store) -> None:
    users, meta, content = _frames()
    got_users = store.get_users([*users[fn.USER_ID], "nobody"])
    assert set(got_users) == set(users[fn.USER_ID])  # the unknown user is missing, not zeros
    for row in users.to_dict("records"):
        assert got_users[row.pop(fn.USER_ID)] == row

    got_tracks = store.get_tracks([*meta[fn.TRACK_ID], "t-unknown"])
    assert set(got_tracks) == set(meta[fn.TRACK_ID])
    for meta_row, content_row in zip(meta.to_dict("records"), content.to_dict("records"), strict=True):
        got = got_tracks[meta_row[fn.TRACK_ID]]
        assert got["genre"] == meta_row["genre"] and got["key"] == meta_row["key"]
        assert got["release_year"] == meta_row["release_year"] and got["language"] == meta_row["language"]
        assert got["popularity"] == float(meta_row["popularity"])  # float32 round trip is exact
        assert got["embedding"] == _as_float32(content_row["embedding"])
        assert got["tokens"] == content_row["tokens"].tolist()
        assert got["encoder_revision"] == content_row["encoder_revision"]

    only_content = store.get_tracks(["t0"], views=[fn.TRACK_CONTENT])["t0"]
    assert set(only_content) == set(fn.TRACK_CONTENT_FIELDS)
    offline = store.read_offline(fn.TRACK_META)
    assert sorted(offline[fn.TRACK_ID]) == sorted(meta[fn.TRACK_ID])


def test_push_track_is_live_at_once_and_recorded_offline(store: Store) -> None:
    content, meta = _new_content(1), _new_meta()
    assert not store.track_exists("up-1")
    store.push_track("up-1", meta, content)

    assert store.track_exists("up-1")
    got = store.get_tracks(["up-1"])["up-1"]
    assert got["embedding"] == _as_float32(content["embedding"])
    assert got["tokens"] == content["tokens"]
    assert {name: got[name] for name in fn.TRACK_META_FIELDS} == meta

    offline_content = store.read_offline(fn.TRACK_CONTENT).set_index(fn.TRACK_ID)
    assert offline_content.loc["up-1", "embedding"].tolist() == _as_float32(content["embedding"])
    assert store.read_offline(fn.TRACK_META).set_index(fn.TRACK_ID).loc["up-1", "genre"] == "ambient"
    assert not list((store.settings.data_dir / ".tmp").iterdir())  # temp parts were published or removed


def test_push_without_meta_leaves_meta_fields_empty(store: Store) -> None:
    store.push_track("up-2", None, _new_content(2))
    got = store.get_tracks(["up-2"])["up-2"]
    assert got["genre"] is None and got["popularity"] is None
    assert got["encoder"] == "mfcc"


def test_delete_track_removes_its_online_and_offline_rows_and_nothing_else(store: Store) -> None:
    store.push_track("up-gone", _new_meta(), _new_content(3))
    store.push_track("up-stays", _new_meta(), _new_content(4))
    assert store.delete_track("up-gone")
    assert not store.track_exists("up-gone") and store.track_exists("up-stays")
    assert "up-gone" not in store.offline_track_ids() and "up-stays" in store.offline_track_ids()
    assert "up-gone" not in set(store.read_offline(fn.TRACK_CONTENT)[fn.TRACK_ID])
    assert not store.delete_track("up-gone")  # a second delete finds nothing


def _bad(change: dict[str, Any], where: str = "content") -> dict[str, Any]:
    return {"where": where, "change": change}


BAD_PUSHES = {
    "nan in embedding": _bad({"embedding": [0.1, math.nan] + [0.0] * (EMBEDDING_DIM - 2)}),
    "inf after float32": _bad({"embedding": [1e39] * EMBEDDING_DIM}),
    "empty embedding": _bad({"embedding": []}),
    "embedding as string": _bad({"embedding": "0.1,0.2"}),
    "2-d embedding": _bad({"embedding": np.zeros((2, 4))}),
    "float tokens": _bad({"tokens": [1.0] * N_LAYERS}),
    "token out of range": _bad({"tokens": [0] * (N_LAYERS - 1) + [32]}),
    "negative token": _bad({"tokens": [-1] + [0] * (N_LAYERS - 1)}),
    "empty encoder": _bad({"encoder": " "}),
    "missing content field": _bad({"encoder_revision": None}),
    "unknown content field": _bad({"bpm": 120}),
    "string key": _bad({"key": "5"}, "meta"),
    "bool mode": _bad({"mode": True}, "meta"),
    "nan popularity": _bad({"popularity": math.nan}, "meta"),
    "missing meta field": _bad({"genre": None}, "meta"),
}


@pytest.mark.parametrize("case", list(BAD_PUSHES))
def test_bad_push_raises_and_writes_nothing(store: Store, case: str) -> None:
    content, meta = _new_content(3), _new_meta()
    target = content if BAD_PUSHES[case]["where"] == "content" else meta
    for name, value in BAD_PUSHES[case]["change"].items():
        if value is None:
            del target[name]
        else:
            target[name] = value
    parts_before = _offline_parts(store)

    with pytest.raises(InvalidTrackError) as error:
        store.push_track("bad-1", meta, content)

    assert str(error.value)  # says what was wrong
    assert not store.track_exists("bad-1")
    assert _offline_parts(store) == parts_before


def test_bad_push_arguments_raise(store: Store) -> None:
    with pytest.raises(InvalidTrackError, match="track_id"):
        store.push_track("", None, _new_content(4))
    with pytest.raises(InvalidTrackError, match="content: expected a mapping"):
        store.push_track("bad-2", None, [1, 2, 3])  # type: ignore[arg-type]
    assert not store.track_exists("bad-2")


def test_materialize_rejects_bad_frames_before_writing(store: Store) -> None:
    users, meta, content = _frames()
    parts_before = _offline_parts(store)
    bad_frames = [
        (None, meta.drop(columns=["genre"]), None),
        (None, meta.assign(bpm=120), None),
        (pd.concat([users, users.head(1)]), None, None),
        (None, meta.assign(popularity=np.nan), None),
        (None, None, content.assign(tokens=[[]] * len(content))),
        (None, meta.assign(key=["x"] * len(meta)), None),
        # a good users frame alongside a bad one: nothing may be written at all
        (users.assign(n_plays=users["n_plays"] + 1), None, content.assign(encoder=None)),
    ]
    for frames in bad_frames:
        with pytest.raises(InvalidTrackError):
            store.materialize_frames(*frames)
    assert _offline_parts(store) == parts_before
    assert store.get_users(["u0"])["u0"]["n_plays"] == 120


# --- fast read path -----------------------------------------------------------------------------------


def test_track_table_serves_what_the_store_serves(store: Store) -> None:
    table = TrackTable(store, miss_ttl_s=0.0)
    table.load()
    ids = ["t3", "t0", "t-unknown", "t4"]
    assert table.get(ids) == store.get_tracks(ids)

    batch = table.lookup(ids)
    assert batch.track_ids == ["t3", "t0", "t4"] and batch.missing == ["t-unknown"]
    assert batch.columns["embedding"].shape == (3, EMBEDDING_DIM)
    assert batch.columns["tokens"].dtype == np.int64 and batch.columns["popularity"].dtype == np.float32
    assert batch.present[fn.TRACK_META].all()

    store.push_track("up-3", None, _new_content(5))  # after load: picked up on first lookup
    found, held = table.held(["up-3", "t0", "t3"])  # the hot path's read: the table only, never the store
    assert found.tolist() == [False, True, True] and held.track_ids == ["t0", "t3"] and held.missing == ["up-3"]
    np.testing.assert_array_equal(held.columns["embedding"], table.lookup(["t0", "t3"]).columns["embedding"])
    assert "up-3" not in table
    batch = table.lookup(["up-3", "t0"])
    assert batch.track_ids == ["up-3", "t0"] and not batch.missing
    assert not batch.present[fn.TRACK_META][0] and batch.present[fn.TRACK_CONTENT][0]
    assert table.get(["up-3"]) == store.get_tracks(["up-3"])


def test_track_table_consistency_model(store: Store) -> None:
    store.push_track("up-5", _new_meta(), _new_content(6))
    table = TrackTable(store, miss_ttl_s=60.0)
    table.load(["t0", "up-5"])
    assert len(table) == 2

    # A miss is remembered for miss_ttl_s: a track pushed after it was asked for waits for that (or a load).
    assert table.lookup(["up-4"]).missing == ["up-4"]
    store.push_track("up-4", _new_meta(), _new_content(6))
    assert table.lookup(["up-4"]).missing == ["up-4"]

    # Held tracks are not re-read on lookup; a (re)load picks up overwrites and the pushed track.
    store.push_track("up-5", {**_new_meta(), "genre": "metal"}, _new_content(7))
    assert table.get(["up-5"])["up-5"]["genre"] == "ambient"
    table.load()
    assert table.get(["up-5"])["up-5"]["genre"] == "metal"
    assert "up-4" in table and table.get(["up-4"]) == store.get_tracks(["up-4"])


def test_track_table_reloads_in_background_when_stale(store: Store) -> None:
    store.push_track("up-6", _new_meta(), _new_content(8))
    table = TrackTable(store, max_age_s=0.0)
    table.load()
    store.push_track("up-6", {**_new_meta(), "genre": "dub"}, _new_content(9))
    deadline = time.monotonic() + 10
    while table.lookup(["up-6"]).columns["genre"][0] != "dub":  # serves the old snapshot meanwhile
        assert time.monotonic() < deadline, "stale table was not reloaded"
        time.sleep(0.02)


def test_importing_store_does_not_import_feast() -> None:
    code = "import sys, encore.store; assert 'feast' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- health and settings --------------------------------------------------------------------------------


def test_ping(store: Store, tmp_path: Path) -> None:
    assert store.ping()
    assert not Store(StoreSettings(tmp_path / "never-applied", "p", "sqlite")).ping()
    closed_port = free_port()
    assert not Store(StoreSettings(tmp_path, "p", "redis", f"redis://127.0.0.1:{closed_port}/0")).ping()


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCORE_FEAST_DATA_DIR", "/srv/feast")
    monkeypatch.setenv("ENCORE_FEAST_PROJECT", "encore_prod")
    monkeypatch.setenv("ENCORE_FEAST_ONLINE", "Redis")
    monkeypatch.setenv("ENCORE_REDIS_URL", "rediss://:s3cret@cache:6380/2")
    settings = EncoreSettings().store()
    assert settings.data_dir == Path("/srv/feast") and settings.online == "redis" and settings.project == "encore_prod"
    assert settings.feast_redis_connection() == "cache:6380,db=2,password=s3cret,ssl=true"
    assert Store().settings == settings  # a store built without settings reads the same variables
    for name in ("ENCORE_FEAST_DATA_DIR", "ENCORE_FEAST_ONLINE", "ENCORE_FEAST_PROJECT"):
        monkeypatch.setenv(name, "")  # empty means the default, as before
    assert EncoreSettings().store() == StoreSettings(redis_url="rediss://:s3cret@cache:6380/2")
    with pytest.raises(StoreError, match="project"):
        StoreSettings(project="no-dashes")


def test_redis_cluster_settings() -> None:
    """ENCORE_FEAST_ONLINE=redis_cluster: Feast's connection string carries no database (a cluster has db 0)."""
    settings = StoreSettings(online="redis_cluster", redis_url="redis://:pw@redis-cluster:6379")
    assert settings.feast_redis_connection() == "redis-cluster:6379,password=pw"
    assert StoreSettings(online="redis_cluster", redis_url="redis://h:7000/0").feast_redis_connection() == "h:7000"
    with pytest.raises(StoreError, match="database 0 only"):
        StoreSettings(online="redis_cluster", redis_url="redis://h:7000/3").feast_redis_connection()
    with pytest.raises(StoreError, match="redis_cluster"):
        StoreSettings(online="memcached")  # type: ignore[arg-type]


def test_cluster_store_spreads_keys_over_three_masters(store: Store) -> None:
    if store.settings.online != "redis_cluster":
        pytest.skip("the cluster backend only")
    import redis

    masters = redis.RedisCluster.from_url(store.settings.redis_url).get_primaries()
    assert len(masters) == 3
    counts = [redis.Redis(host=n.host, port=n.port).dbsize() for n in masters]
    assert all(c > 0 for c in counts), counts  # users and tracks hashed over every master's slots
