"""encore.online_read against Feast itself: the same entities read both ways give the same values, on a real
SQLite online store and a real Redis, including the layouts off the vectorized fast paths."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore.online_read import decode_value, read_columns
from encore.store import Store, StoreError, StoreSettings
from encore.track_table import TrackTable

N_TRACKS = 60
WIDTH, N_TOKENS = 6, 5
MISFIT = "t_misfit"  # content with another embedding length: the table serves it as missing content
CONTENT_ONLY, META_ONLY = "t_content_only", "t_meta_only"
LONG_TEXT = "ü" * 9000  # 18 000 bytes: a three-byte length prefix, off the string fast path


def _frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)
    users = pd.DataFrame(
        {
            fn.USER_ID: ["u0", "u1", "ü-2"],
            "country": ["SE", "", "日本"],
            "age": [31, -1, 2**40],
            "gender": ["f", "", "m"],
            "n_plays": [0, 127, 128],
            "n_tracks": [-(2**62), 1, 300],
        }
    )
    ids = [f"t{i}" for i in range(N_TRACKS)]
    meta_ids = [*ids, META_ONLY, MISFIT]
    n = len(meta_ids)
    meta = pd.DataFrame(
        {
            fn.TRACK_ID: meta_ids,
            "artist_id": [f"a{i % 7}" for i in range(n)],
            "genre": rng.choice(["rock", "jazz", "", "música popular", "x" * 200], n),
            "key": rng.integers(-1, 12, n),
            "mode": rng.integers(-1, 2, n),
            "language": ["sv"] * (n - 1) + [LONG_TEXT],
            "release_year": rng.integers(1900, 2030, n),
            "popularity": np.concatenate([[0.0, -0.0, 1e-30], rng.random(n - 3)]).astype(np.float32),
        }
    )
    content_ids = [*ids, CONTENT_ONLY, MISFIT]
    m = len(content_ids)
    embeddings = list(rng.standard_normal((m, WIDTH)).astype(np.float32))
    embeddings[-1] = rng.standard_normal(WIDTH + 2).astype(np.float32)
    tokens = list(rng.integers(0, 32, (m, N_TOKENS)))
    tokens[3] = np.array([0, 127, 128, 5000, 2**40])  # multi-byte varints: off the token fast path
    content = pd.DataFrame(
        {
            fn.TRACK_ID: content_ids,
            "embedding": embeddings,
            "tokens": tokens,
            "encoder": "mfcc",
            "encoder_revision": "mfcc-v1+kmeans32-abc",
            "typicality": rng.random(m).astype(np.float32),
            "tags": ["mtt:rock,msd:jazz", ""] * (m // 2),
        }
    )
    return users, meta, content


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    online = request.param
    project = f"encore_read_{uuid.uuid4().hex[:12]}"
    data_dir = tmp_path_factory.mktemp(f"feast_{online}")
    if online == "redis":
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/7"
        settings = StoreSettings(data_dir, project, "redis", url)
    else:
        settings = StoreSettings(data_dir, project, "sqlite")
    store = Store(settings)
    store.apply()
    store.materialize_frames(*_frames())
    yield store
    if online == "redis":
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match=f"*{project}"))
        if keys:
            client.delete(*keys)


def feast_rows(store: Store, key: str, ids: list[str], views: list[str]) -> dict[str, dict[str, Any]]:
    """Feast's own read, shaped like Store's: per-entity dicts, entities with no value left out."""
    refs = [f"{view}:{name}" for view in views for name in fn.VIEW_FIELDS[view]]
    columns = store.feast.get_online_features(features=refs, entity_rows=[{key: i} for i in ids]).to_dict()
    result = {}
    for n, entity_id in enumerate(ids):
        row = {name: columns[name][n] for view in views for name in fn.VIEW_FIELDS[view]}
        if any(value is not None for value in row.values()):
            result[entity_id] = row
    return result


ALL_TRACKS = [f"t{i}" for i in range(N_TRACKS)] + [CONTENT_ONLY, META_ONLY, MISFIT, "t_unknown"]


def test_rows_equal_feasts_read(store: Store) -> None:
    for views in ([fn.TRACK_META, fn.TRACK_CONTENT], [fn.TRACK_CONTENT], [fn.TRACK_META]):
        ours = store.get_tracks(ALL_TRACKS, views=views)
        assert ours == feast_rows(store, fn.TRACK_ID, ALL_TRACKS, views)
    assert "t_unknown" not in ours and ours[META_ONLY]["genre"] is not None
    users = ["u0", "u1", "ü-2", "nobody"]
    assert store.get_users(users) == feast_rows(store, fn.USER_ID, users, [fn.USER_PROFILE])
    assert store.get_users(["ü-2"])["ü-2"]["n_tracks"] == 300 and store.get_users(["u0"])["u0"]["age"] == 31


def test_table_columns_equal_feasts_read(store: Store) -> None:
    """The vectorized column decoding (what the ranker's table holds) against Feast, value by value."""
    expected = feast_rows(store, fn.TRACK_ID, ALL_TRACKS, list(fn.TRACK_VIEWS))
    table = TrackTable(store)
    assert table.load(ALL_TRACKS) == len(expected)
    served = table.get(ALL_TRACKS)
    misfit = served.pop(MISFIT)
    assert misfit["embedding"] is None and misfit["genre"] == expected.pop(MISFIT)["genre"]
    assert served == expected
    assert served[META_ONLY]["embedding"] is None and served[CONTENT_ONLY]["genre"] is None
    assert served["t3"]["tokens"] == [0, 127, 128, 5000, 2**40]
    columns = read_columns(store.reader, ALL_TRACKS, fn.FIELD_DTYPES)
    assert columns.misfits == [MISFIT] and columns.columns["embedding"].shape == (len(columns.ids), WIDTH)


def test_bulk_scan_equals_per_id_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite switches to one table scan for large id lists; both ways give the same table."""
    import encore.online_read as online_read

    per_id = read_columns(store.reader, ALL_TRACKS, fn.FIELD_DTYPES)
    monkeypatch.setattr(online_read, "SQLITE_SCAN_FROM", 1)
    monkeypatch.setattr(online_read, "REDIS_CHUNK", 7)
    scanned = read_columns(store.reader, ALL_TRACKS, fn.FIELD_DTYPES)
    assert scanned.ids == per_id.ids
    for name, values in per_id.columns.items():
        np.testing.assert_array_equal(scanned.columns[name], values)


def test_unset_value_reads_as_none() -> None:
    assert decode_value(None) is None and decode_value(b"") is None
    assert decode_value(b"\x82\x01\x00") == []  # an empty float list


def test_usual_layouts_take_the_vectorized_paths(store: Store) -> None:
    """Catalog rows (short strings, small ints, fixed-width arrays) decode as blocks, not value by value."""
    from encore.online_read import _array_column, _Packed, _scalar_fast

    ids = [f"t{i}" for i in range(N_TRACKS) if i != 3]
    blobs = store.reader.blobs(fn.TRACK_ID, ids, fn.TRACK_VIEWS)
    for view in fn.TRACK_VIEWS:
        for name, column in blobs[view].items():
            dtype = fn.FIELD_DTYPES[name]
            if dtype.startswith("Array("):
                matrix, ok, width = _array_column(column, dtype, None)
                assert ok.all() and width == (WIDTH if name == "embedding" else N_TOKENS)
            else:
                assert _scalar_fast(_Packed(column), dtype) is not None, name


def test_user_activity_rows_equal_feasts_read(store: Store) -> None:
    """user_activity (string lists, float lists that may be empty) as the ranker reads it per request."""
    stamp = pd.Timestamp.now(tz="UTC")
    rows = [
        {
            fn.USER_ID: "u0",
            "recent_tracks": ["t1", "t-ü", "t3"],
            "recent_types": ["play", "skip", "like"],
            "n_play": 1,
            "n_skip": 1,
            "n_like": 1,
            "n_dislike": 0,
            "skip_rate": 0.5,
            "profile": np.array([0.25, -1.5, 3.0], np.float32),
            "profile_n": 2,
        },
        {
            fn.USER_ID: "u1",
            "recent_tracks": [],
            "recent_types": [],
            "n_play": 0,
            "n_skip": 0,
            "n_like": 0,
            "n_dislike": 0,
            "skip_rate": 0.0,
            "profile": np.zeros(0, np.float32),
            "profile_n": 0,
        },
    ]
    frame = pd.DataFrame([{**r, fn.EVENT_TIMESTAMP: stamp, fn.CREATED_TIMESTAMP: stamp} for r in rows])
    store.push_online(fn.USER_ACTIVITY, frame)
    users = ["u0", "u1", "nobody"]
    ours = store.get_activity(users)
    assert ours == feast_rows(store, fn.USER_ID, users, [fn.USER_ACTIVITY])
    assert ours["u0"]["recent_tracks"] == ["t1", "t-ü", "t3"] and ours["u0"]["profile"] == [0.25, -1.5, 3.0]


def test_user_views_in_one_read_equal_the_reads_of_each(store: Store) -> None:
    """The ranker's per-request read (profile and recent events in one round trip) gives what the two reads give,
    for a user with both, a user with events only, a user with a profile only, and an unknown user."""
    stamp = pd.Timestamp.now(tz="UTC")
    row = {
        "recent_tracks": ["t2"], "recent_types": ["play"], "n_play": 1, "n_skip": 0, "n_like": 0, "n_dislike": 0,
        "skip_rate": 0.0, "profile": np.array([1.0, 2.0], np.float32), "profile_n": 1,
    }  # fmt: skip
    frame = pd.DataFrame(
        [{fn.USER_ID: u, **row, fn.EVENT_TIMESTAMP: stamp, fn.CREATED_TIMESTAMP: stamp} for u in ("u0", "events-only")]
    )
    store.push_online(fn.USER_ACTIVITY, frame)
    users = ["u0", "events-only", "ü-2", "nobody"]  # both, events only, a profile only (no test pushes its events)

    both = store.get_user_views(users, [fn.USER_PROFILE, fn.USER_ACTIVITY])

    assert both[fn.USER_PROFILE] == store.get_users(users) and sorted(both[fn.USER_PROFILE]) == ["u0", "ü-2"]
    assert both[fn.USER_ACTIVITY] == store.get_activity(users)
    assert sorted(both[fn.USER_ACTIVITY]) == ["events-only", "u0"]
    assert store.get_user_views(users, [fn.USER_ACTIVITY]) == {fn.USER_ACTIVITY: both[fn.USER_ACTIVITY]}
    with pytest.raises(StoreError, match="not user views"):
        store.get_user_views(users, [fn.TRACK_META])
