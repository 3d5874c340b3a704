"""The pooled encoder layers of uploaded tracks, kept so a codebook refit can re-tokenize them.

The store keeps a track's tokens, dense vector and typicality, all cut from its pooled layers by one bundle's
codebooks (encore/audio/content.py); new codebooks need the layers themselves. The catalog's are in its
extracted content folder (encore/audio/extract.py); an upload's are written here by the embedder, beside the
store's offline sources:

    <ENCORE_FEAST_DATA_DIR>/track_layers/layers-<time>-<uuid>.parquet   track_id, layers, encoder, revision, written
    <ENCORE_FEAST_DATA_DIR>/track_layers/catalog.parquet                 the bootstrap's catalog (CATALOG_PART)

So a refit (training/retrain.py) finds every stored track's layers in the store, the world's folder unneeded; the
catalog part also says which stored tracks are the bootstrap's (`catalog_ids`: the rest were uploaded since).
One parquet part per write (no pickle), published with os.replace; the newest row of a track wins, and
`Store.delete_track` removes a track's rows with its features (`delete`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from encore import feature_names as fn
from encore.io import atomic_path, drop_rows

FOLDER = "track_layers"
CATALOG_PART = "catalog.parquet"  # the bootstrap's catalog, written whole (write_many), replaced by the next bootstrap
SCHEMA = pa.schema(
    [
        pa.field(fn.TRACK_ID, pa.string(), nullable=False),
        pa.field("layers", pa.list_(pa.float32()), nullable=False),  # flat pooled layers (encore/audio/layers.py)
        pa.field("encoder", pa.string(), nullable=False),  # the encoder's name
        pa.field("revision", pa.string(), nullable=False),  # the encoder's revision (not the codebooks')
        pa.field("written", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def folder_of(data_dir: Path) -> Path:
    """Where the layers of a store (its ENCORE_FEAST_DATA_DIR) are kept."""
    return Path(data_dir) / FOLDER


def write(data_dir: Path, track_id: str, layers: np.ndarray, encoder: str, revision: str) -> None:
    """Keep one track's flat pooled layers (a new part; an earlier row of the track is superseded)."""
    values = np.asarray(layers, dtype=np.float32).reshape(-1)
    if not values.size or not np.isfinite(values).all():
        raise ValueError(f"track {track_id}: layers must be a non-empty finite vector")
    now = pd.Timestamp.now(tz="UTC")
    table = pa.Table.from_pydict(
        {fn.TRACK_ID: [track_id], "layers": [values], "encoder": [encoder], "revision": [revision], "written": [now]},
        schema=SCHEMA,
    )
    folder = folder_of(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"layers-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_many(data_dir: Path, ids: list[str], layers: np.ndarray, encoder: str, revision: str, name: str) -> None:
    """Keep many tracks' flat pooled layers ((N, total) float32) as one part named `name`, replacing a part of
    that name (the bootstrap keeps its catalog's as `catalog.parquet`)."""
    values = np.asarray(layers, dtype=np.float32).reshape(len(ids), -1)
    if not values.size or not np.isfinite(values).all():
        raise ValueError("layers must be non-empty and finite")
    flat = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    table = pa.Table.from_pydict(
        {fn.TRACK_ID: ids, "layers": flat.cast(pa.list_(pa.float32())), "encoder": [encoder] * len(ids),
         "revision": [revision] * len(ids), "written": [pd.Timestamp.now(tz="UTC")] * len(ids)},
        schema=SCHEMA,
    )  # fmt: skip
    folder = folder_of(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / name) as tmp:
        pq.write_table(table, tmp)


def catalog_ids(data_dir: Path) -> set[str]:
    """The bootstrap's catalog tracks still in the store (a deleted track's row leaves the part with it)."""
    path = folder_of(data_dir) / CATALOG_PART
    return set(pq.read_table(path, columns=[fn.TRACK_ID]).column(0).to_pylist()) if path.is_file() else set()


def read(data_dir: Path) -> pd.DataFrame:
    """The newest row of every kept track: track_id, layers (float32 arrays), encoder, revision, written."""
    folder = folder_of(data_dir)
    if not any(folder.glob("*.parquet")):
        return pd.DataFrame(columns=SCHEMA.names)
    frame = pq.read_table(folder, schema=SCHEMA).to_pandas()
    frame = frame.sort_values("written", kind="stable").drop_duplicates(fn.TRACK_ID, keep="last")
    frame["layers"] = [np.asarray(v, dtype=np.float32) for v in frame["layers"]]
    return frame.reset_index(drop=True)


def delete(data_dir: Path, track_id: str) -> None:
    """Remove every kept row of `track_id` (a part left empty is deleted, the others rewritten whole)."""
    drop_rows(folder_of(data_dir), fn.TRACK_ID, track_id, SCHEMA)
