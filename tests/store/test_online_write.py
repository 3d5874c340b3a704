"""encore.online_write stores the very bytes Feast's push stores, so Feast and encore.online_read read it alike."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from encore import feature_names as fn
from encore.online_read import entity_key
from encore.online_write import encode_value, redis_hsets, sqlite_upsert
from encore.store import Store, StoreSettings, redis_client
from tests.store.test_events_redis import RedisServer

STAMP = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)


@pytest.mark.parametrize(
    ("dtype", "value_type", "value"),
    [
        ("String", "STRING", "héllo"),
        ("String", "STRING", ""),
        ("Int64", "INT64", 0),
        ("Int64", "INT64", -1),
        ("Int64", "INT64", 2**40 + 3),
        ("Float32", "FLOAT", 1 / 3),
        ("Float32", "FLOAT", 0.0),
        ("Array(String)", "STRING_LIST", ["t1", "t-2", "ü" * 200]),
        ("Array(Float32)", "FLOAT_LIST", [0.5, -1.25, 3e-8]),
        ("Array(Float32)", "FLOAT_LIST", list(np.linspace(-1, 1, 200))),
        ("Array(Int64)", "INT64_LIST", [0, 5, 300, -2]),
    ],
)
def test_encoded_values_are_feasts_bytes(dtype: str, value_type: str, value: object) -> None:
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    expected = python_values_to_proto_values([value], ValueType[value_type])[0].SerializeToString()
    assert encode_value(dtype, value) == expected


def _rows(users: list[str]) -> list[dict]:
    rng = np.random.default_rng(3)
    rows = []
    for n, user in enumerate(users):
        dim = 0 if n == 0 else 200  # a listener without a positive event has an empty profile
        rows.append({
            fn.USER_ID: user, "recent_tracks": [f"t{n}", "t9"], "recent_types": ["play", "skip"],
            "n_play": 3 + n, "n_skip": n, "n_like": 0, "n_dislike": 1, "skip_rate": n / (3 + 2 * n),
            "profile": rng.standard_normal(dim).astype(np.float32), "profile_n": 2 if dim else 0,
        })  # fmt: skip
    return rows


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    server = None
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()
        settings = StoreSettings(tmp_path / "feast", f"ow_{uuid.uuid4().hex[:8]}", "redis",
                                 f"redis://127.0.0.1:{server.port}/0")  # fmt: skip
    else:
        settings = StoreSettings(tmp_path / "feast", f"ow_{uuid.uuid4().hex[:8]}", "sqlite")
    store = Store(settings)
    store.apply()
    yield store
    if server is not None:
        server.stop()


def test_rows_written_directly_equal_rows_pushed_through_feast(store: Store) -> None:
    feast_ids, our_ids = ["f0", "f1", "f2"], ["o0", "o1", "o2"]
    stamps = [int(STAMP.timestamp()) * 1_000_000 + STAMP.microsecond] * 3
    frame = pd.DataFrame(_rows(feast_ids))
    frame[fn.EVENT_TIMESTAMP] = frame[fn.CREATED_TIMESTAMP] = pd.Timestamp(STAMP)
    store.push_online(fn.USER_ACTIVITY, frame)
    ours = _rows(our_ids)
    s = store.settings
    if s.online == "redis":
        client = redis_client(s, connect_timeout_s=2, timeout_s=5)
        with client.pipeline(transaction=True) as pipe:
            redis_hsets(pipe, s.project, fn.USER_ACTIVITY, our_ids, ours, stamps)
            pipe.execute()
        for f, o in zip(feast_ids, our_ids, strict=True):  # every field, the timestamp included
            stored = [client.hgetall(entity_key(fn.USER_ID, i) + s.project.encode()) for i in (f, o)]
            assert stored[0] == stored[1]
    else:
        with sqlite3.connect(s.sqlite_path) as conn:
            sqlite_upsert(conn, s.project, fn.USER_ACTIVITY, our_ids, ours, stamps)
            table = f'"{s.project}_{fn.USER_ACTIVITY}"'
            query = f"SELECT feature_name, value, value_text, event_ts, created_ts FROM {table} WHERE entity_key = ?"
            for f, o in zip(feast_ids, our_ids, strict=True):
                stored = [sorted(conn.execute(query, (entity_key(fn.USER_ID, i),))) for i in (f, o)]
                assert stored[0] == stored[1] and len(stored[0]) == len(fn.USER_ACTIVITY_FIELDS)

    read = store.get_activity([*feast_ids, *our_ids])
    for f, o in zip(feast_ids, our_ids, strict=True):
        assert read[f] == read[o]
    online = store.feast.get_online_features(
        [f"{fn.USER_ACTIVITY}:{name}" for name in fn.USER_ACTIVITY_FIELDS], [{fn.USER_ID: i} for i in our_ids]
    ).to_dict()
    assert online["n_play"] == [3, 4, 5] and online["recent_tracks"][2] == ["t2", "t9"]
    assert np.allclose(online["profile"][1], ours[1]["profile"])


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="Bool"):
        encode_value("Bool", True)
