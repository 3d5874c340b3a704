"""materialize_frames(append=True) builds one training snapshot from chunks; without it a snapshot replaces."""

from __future__ import annotations

import uuid
from pathlib import Path

from benchmarks.serving_world import feature_tables
from encore.store import Store, StoreSettings


def test_chunks_appended_form_one_snapshot_and_a_new_snapshot_replaces_it(tmp_path: Path) -> None:
    store = Store(StoreSettings(tmp_path, f"append_{uuid.uuid4().hex[:8]}", "sqlite"))
    store.apply()
    tables = feature_tables(250, 10)
    meta, content = tables.track_meta, tables.track_content
    store.materialize_frames(tables.users, meta.iloc[:100], content.iloc[:100])
    store.materialize_frames(None, meta.iloc[100:], content.iloc[100:], append=True)
    assert store.offline_track_ids() == sorted(meta["track_id"])
    assert len(store.get_tracks(meta["track_id"])) == 250
    store.materialize_frames(None, meta.iloc[:50], content.iloc[:50])
    assert store.offline_track_ids() == sorted(meta["track_id"].iloc[:50])
