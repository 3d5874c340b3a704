"""Encode the ranker's item inputs ahead of its first start (the bootstrap, right after writing the track snapshot).

Encoding every track's item fields takes about a minute at 1M tracks; the ranker waits for it before it answers.
Run here, against the same persisted track table and the same folders the ranker's settings name, it writes the
files the ranker then maps (services/ranker/encoded_items.py keys them by the bundle's spec and the snapshot's
name, so only a ranker that would have encoded exactly these rows uses them).
"""

from __future__ import annotations

import logging
from pathlib import Path

from encore.artifacts import load_bundle
from encore.ranker_bundle import RankerComponent
from encore.settings import RankerSettings
from encore.store import Store
from encore.track_snapshot import TrackSnapshots
from encore.track_table import TrackTable
from services.ranker.encoded_items import ItemInputCache

log = logging.getLogger("encore.ranker")


def encode_ahead(store: Store, bundle_path: Path, settings: RankerSettings | None = None) -> bool:
    """Encode the item inputs of `bundle_path`'s spec for `store`'s persisted table; False when the ranker's
    settings persist neither (then it encodes at its start, as before)."""
    settings = settings or RankerSettings()
    snapshot_dir = settings.track_snapshot_path(store.settings.data_dir)
    share_dir = settings.item_cache_path
    if snapshot_dir is None or share_dir is None:
        return False
    table = TrackTable(store, snapshots=TrackSnapshots(store, snapshot_dir))
    table.load()
    spec = RankerComponent.read(load_bundle(bundle_path)).spec
    encoded = ItemInputCache(share_dir).build(spec, table)
    if encoded is not None:
        log.info("item inputs of %d tracks encoded ahead for bundle %s", encoded.n_rows, bundle_path.name)
    return encoded is not None
