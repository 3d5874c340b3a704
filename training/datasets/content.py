"""Audio content as item fields: one dense vector field, or per-layer codebook tokens as categorical fields.

Content arrays are checked before use (shape, duplicate keys, items without content); the content transform
(encore/audio/transform.py: standardize, then bound) and codebooks are fit on training items only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from encore.audio.codebooks import Codebooks
from encore.audio.extract import load_catalog
from encore.audio.layers import LayerLayout
from encore.audio.transform import ContentTransform
from encore.errors import EncoreError
from encore.ranker_frame import AUDIO_EMBEDDING, AUDIO_MISSING, AUDIO_TOKEN_PREFIX, audio_token
from encore.schema import FieldConfig

ContentMode = Literal["none", "dense", "tokens"]
MissingPolicy = Literal["error", "zeros"]
CONTENT_MODES = ("none", "dense", "tokens")
DENSE_FIELD = AUDIO_EMBEDDING  # the ranker's column names (encore/ranker_frame.py), so a benchmark cell's
TOKEN_PREFIX = AUDIO_TOKEN_PREFIX  # content fields read like the served ranker's
MASK_FIELD = AUDIO_MISSING
ITEM = "track_id"


@dataclass
class ContentArrays:
    """Pooled encoder layers per item, as extract_catalog writes them."""

    item_ids: list[str]
    layers: np.ndarray  # (N, total) float32: the flat pooled layers (encore/audio/layers.py)
    encoder: dict[str, Any]
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.layers.ndim == 3:  # equal-width layers as (N, L, D): the same values, flat row-major
            self.layers = self.layers.reshape(len(self.layers), -1)

    @classmethod
    def from_catalog(cls, folder: Path) -> ContentArrays:
        ids, layers, manifest = load_catalog(folder)
        return cls(ids, layers, manifest["encoder"], manifest["files"]["content.npz"]["sha256"])


@dataclass
class ItemContent:
    table: pd.DataFrame  # track_id + one column per content field
    fields: list[FieldConfig]
    codebooks: Codebooks | None = None


def validate_content(
    arrays: ContentArrays, items: np.ndarray, missing: MissingPolicy = "error"
) -> tuple[np.ndarray, np.ndarray]:
    """Row of each item in `arrays.layers` (-1 when absent) and the mask of absent items; raises on bad input."""
    layers = arrays.layers
    layout = LayerLayout.of(arrays.encoder)
    if layers.ndim != 2 or layers.shape[1] != layout.total:
        raise EncoreError(
            f"content arrays have shape {layers.shape}, but encoder {arrays.encoder.get('backend')!r} declares "
            f"layers of widths {list(layout.widths)} (N, {layout.total})"
        )
    if len(arrays.item_ids) != layers.shape[0]:
        raise EncoreError(f"content has {len(arrays.item_ids)} keys for {layers.shape[0]} vectors")
    if not np.isfinite(layers).all():
        raise EncoreError("content arrays hold non-finite values")
    keys = pd.Index([str(k) for k in arrays.item_ids])
    if keys.has_duplicates:
        dups = keys[keys.duplicated()].unique().tolist()
        raise EncoreError(f"duplicate content keys: {dups[:5]} ({len(dups)} in all)")
    rows = keys.get_indexer([str(i) for i in items])
    absent = rows < 0
    if absent.any() and missing != "zeros":
        if missing != "error":
            raise EncoreError(f"unknown missing-item policy {missing!r}; known: error, zeros")
        example = [str(i) for i in np.asarray(items)[absent][:5]]
        raise EncoreError(
            f"content missing for {int(absent.sum())} of {len(items)} items (e.g. {example}); extract them, "
            "or configure missing='zeros' to use zero vectors plus a mask field"
        )
    return rows, absent


def token_tag(k: int = 32, token_layers: str = "all") -> str:
    """The variant suffix of non-default token settings ('+tok-k16-last3'); empty for k=32 over all layers."""
    return "" if (int(k), token_layers) == (32, "all") else f"+tok-k{int(k)}-{token_layers.replace(',', '.')}"


def codebooks_dirname(source: str, k: int = 32, token_layers: str = "all") -> str:
    """Where a split keeps the codebooks of one content source and token setting."""
    layers = "" if token_layers == "all" else f"_{token_layers.replace(',', '.')}"
    return f"codebooks_{source}_k{int(k)}{layers}"


def build_item_content(
    arrays: ContentArrays,
    mode: ContentMode,
    items: np.ndarray,
    train_items: np.ndarray,
    *,
    missing: MissingPolicy = "error",
    k: int = 32,
    groups: int | None = None,
    seed: int = 0,
    out_dir: Path | None = None,
    token_layers: str = "all",
) -> ItemContent:
    """Content columns for every item in `items`; statistics and codebooks come from `train_items` only."""
    if mode not in CONTENT_MODES:
        raise EncoreError(f"unknown content setting {mode!r}; known: {', '.join(CONTENT_MODES)}")
    rows, absent = validate_content(arrays, items, missing)
    train_rows = rows[np.isin(items, train_items) & ~absent]
    if len(train_rows) == 0:
        raise EncoreError("no training item has content")
    table = pd.DataFrame({ITEM: items})
    fields: list[FieldConfig] = []
    books = None
    layout = LayerLayout.of(arrays.encoder)
    if mode == "dense":
        # The last layer through the content transform fit on training items (the one serving applies too).
        vectors = layout.layer(arrays.layers, -1)
        z = ContentTransform.fit(vectors[train_rows]).apply(vectors)
        z = np.where(absent[:, None], 0.0, z[np.maximum(rows, 0)]).astype(np.float32)
        table[DENSE_FIELD] = list(z)
        fields.append(FieldConfig(DENSE_FIELD, "dense", owner="item", dim=int(vectors.shape[1])))
    elif mode == "tokens":
        # One codebook per layer; a single-layer encoder (MFCC) is cut into groups so that it still gives
        # several token fields, each summarizing a different block of its features.
        groups = groups or max(1, math.ceil(4 / layout.n_layers))
        try:
            books = Codebooks.fit(
                arrays.layers[train_rows], encoder_info=arrays.encoder, k=k, groups=groups, seed=seed,
                tokenize_layers=token_layers,
            )  # fmt: skip
        except ValueError as exc:
            raise EncoreError(f"token settings (k={k}, layers={token_layers!r}): {exc}") from exc
        tokens = books.tokenize(arrays.layers[np.maximum(rows, 0)]).astype(np.float64)
        tokens[absent] = np.nan  # encoded as OOV
        for f in range(books.n_fields):
            name = audio_token(f)
            table[name] = pd.array(tokens[:, f], dtype="Int64")
            fields.append(FieldConfig(name, "categorical", owner="item"))
        if out_dir is not None:
            books.save(out_dir)
    if mode != "none" and missing == "zeros":
        table[MASK_FIELD] = absent.astype(np.int64)
        fields.append(FieldConfig(MASK_FIELD, "categorical", owner="item"))
    return ItemContent(table, fields, books)
