"""Spec fields -> store features: the frame the ranker encodes for one user and their candidates.

A spec field's `column` names a store field: user fields come from `user_profile` (user_id, country, age,
gender, n_plays, n_tracks), item fields from `track_meta` (track_id, artist_id, genre, key, mode, language,
release_year, popularity), and content as `audio_emb` (dense <- track_content.embedding), `audio_tok_{i}`
(categorical <- track_content.tokens[i]) and `audio_missing` (categorical: 1 when the track has no content,
else 0). Context fields come from the request. Training must build its
frames with these same columns (and the same dtypes: strings, int64, float32), or serving drifts.

Missing values (unknown user, a candidate the store does not know, a track without meta or content) become
None/NaN, which the spec's encoder maps to OOV; a missing dense vector becomes zeros.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.errors import SpecError
from encore.schema import FeatureSpec, FieldSpec
from encore.track_table import TrackBatch

log = logging.getLogger(__name__)

AUDIO_EMBEDDING = "audio_emb"  # dense field <- track_content.embedding
AUDIO_TOKEN = re.compile(r"^audio_tok_(\d+)$")  # categorical field i <- track_content.tokens[i]
AUDIO_MISSING = "audio_missing"  # categorical: 1 where the track has no content row, else 0

USER_COLUMNS: tuple[str, ...] = (fn.USER_ID, *fn.USER_PROFILE_FIELDS)
ITEM_COLUMNS: tuple[str, ...] = (fn.TRACK_ID, *fn.TRACK_META_FIELDS)
CONTENT_COLUMNS = ("embedding", "tokens")  # the store fields content columns are cut from


@dataclass(frozen=True)
class CandidateFeatures:
    """Store features of the candidates, one row per candidate in request order (duplicates kept)."""

    track_ids: list[str]
    columns: dict[str, np.ndarray]  # store field -> (n,) array, or (n, d) for embedding / (n, t) for tokens
    valid: dict[str, np.ndarray]  # view (track_meta, track_content) -> (n,) bool: the row holds real values
    rows: np.ndarray | None = None  # TrackTable rows when every candidate was found (lets Score gather
    generation: int = -1  # pre-encoded item inputs instead of encoding them again)

    @classmethod
    def align(cls, track_ids: Sequence[str], found: np.ndarray, batch: TrackBatch) -> CandidateFeatures:
        """Scatter a TrackBatch (rows of the found candidates, in order) onto all candidates.

        `found[i]` says whether candidate i is in `batch`; the rest get placeholder values marked invalid.
        """
        n = len(track_ids)
        if found.all():  # the usual case: every candidate is in the table, nothing to scatter
            return cls(list(track_ids), dict(batch.columns), dict(batch.present), batch.rows, batch.generation)
        columns = {}
        for name, values in batch.columns.items():
            # placeholders (None / 0) for the candidates not found; `valid` marks them as missing
            full = np.full((n, *values.shape[1:]), None if values.dtype == object else 0, dtype=values.dtype)
            full[found] = values
            columns[name] = full
        valid = {}
        for view in fn.TRACK_VIEWS:
            mask = np.zeros(n, dtype=bool)
            mask[found] = batch.present[view]
            valid[view] = mask
        return cls(list(track_ids), columns, valid)

    @classmethod
    def unknown(cls, track_ids: Sequence[str]) -> CandidateFeatures:
        """Candidates with no store features at all (store down, or a smoke test): everything missing."""
        n = len(track_ids)
        columns: dict[str, np.ndarray] = {name: np.full(n, None, dtype=object) for name in fn.TRACK_META_FIELDS}
        columns["embedding"] = np.zeros((n, 0), dtype=np.float32)
        columns["tokens"] = np.zeros((n, 0), dtype=np.int64)
        return cls(list(track_ids), columns, {view: np.zeros(n, dtype=bool) for view in fn.TRACK_VIEWS})

    def __len__(self) -> int:
        return len(self.track_ids)

    def value(self, name: str, row: int) -> Any:
        """One python value for the response (None where the candidate has no row in that view)."""
        view = fn.TRACK_CONTENT if name in fn.TRACK_CONTENT_FIELDS else fn.TRACK_META
        if name not in self.columns or not self.valid[view][row]:
            return None
        value = self.columns[name][row]
        return value.item() if isinstance(value, np.generic) else value


def check_spec(spec: FeatureSpec) -> None:
    """Fail loudly on a spec field the ranker cannot fill (checked when a bundle is loaded)."""
    unknown = [f"{f.name} (column {f.column!r}, owner {f.owner})" for f in spec.fields if _source(f) is None]
    if unknown:
        raise SpecError(
            f"the ranker has no source for spec field(s) {unknown}; user columns are {list(USER_COLUMNS)}, "
            f"item columns {list(ITEM_COLUMNS)}, content {AUDIO_EMBEDDING!r}, 'audio_tok_<i>' and {AUDIO_MISSING!r}, "
            "and context fields need owner 'context'"
        )


def build_frame(
    spec: FeatureSpec,
    user_id: str,
    user: Mapping[str, Any] | None,
    items: CandidateFeatures,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Column -> values for every spec column, one row per candidate, ready for `spec.encode_packed`."""
    n = len(items)
    context = context or {}
    frame: dict[str, Any] = {}
    for f in spec.fields:
        if f.column in frame:  # two fields may read one column (say, bucketized and scaled)
            continue
        source = _source(f)
        if source == "context":
            frame[f.column] = _constant(context.get(f.column), n)
        elif source == "user_id":
            frame[f.column] = _constant(user_id, n)
        elif source == "user":
            frame[f.column] = _constant(None if user is None else user.get(f.column), n)
        elif source == "track_id":
            frame[f.column] = pd.Series(items.track_ids, dtype=object)
        elif source == "item":
            frame[f.column] = _column(items.columns[f.column], items.valid[fn.TRACK_META])
        elif source == "embedding":
            frame[f.column] = _embedding(f, items)
        elif source == "token":
            frame[f.column] = _token(f, items)
        elif source == "content_missing":
            frame[f.column] = pd.Series((~items.valid[fn.TRACK_CONTENT]).astype(np.int64))
        else:
            raise SpecError(f"no source for spec field {f.name!r} (column {f.column!r})")
    return frame


ITEM_SOURCES = frozenset({"track_id", "item", "embedding", "token", "content_missing"})


def is_item_field(f: FieldSpec) -> bool:
    """True for fields whose value depends on the track only (encoded once per track, see encoded_items)."""
    return _source(f) in ITEM_SOURCES


def _source(f: FieldSpec) -> str | None:
    if f.owner == "context":
        return "context"
    if f.column == fn.USER_ID:
        return "user_id"
    if f.column in fn.USER_PROFILE_FIELDS:
        return "user"
    if f.column == fn.TRACK_ID:
        return "track_id"
    if f.column in fn.TRACK_META_FIELDS:
        return "item"
    if f.column == AUDIO_EMBEDDING and f.kind == "dense":
        return "embedding"
    if AUDIO_TOKEN.match(f.column) and f.kind in ("categorical", "id"):
        return "token"
    if f.column == AUDIO_MISSING and f.kind in ("categorical", "id"):
        return "content_missing"
    return None


def _column(values: np.ndarray, valid: np.ndarray) -> pd.Series:
    """A store column as the encoder must see it: missing rows None (strings) or NaN (numbers).

    Complete columns keep the store's dtype, like a training frame. Integers with gaps go to float64 so NaN
    fits; the encoder maps integral floats back to "1999"-style strings, so those encode the same way too.
    """
    if valid.all():
        return pd.Series(values, dtype=object) if values.dtype == object else pd.Series(values)
    if values.dtype == object:
        return pd.Series(np.where(valid, values, None), dtype=object)
    out = values.astype(np.float64) if values.dtype.kind in "iub" else values.copy()
    out[~valid] = np.nan
    return pd.Series(out)


def _constant(value: Any, n: int) -> pd.Series:
    """A user or context value repeated for every candidate (None -> OOV)."""
    if value is None:
        return pd.Series([None] * n, dtype=object)
    if isinstance(value, bool | int | float | np.number | np.bool_):
        return pd.Series(np.full(n, value))  # int64 / float64 / bool, as in a training frame
    return pd.Series(np.full(n, value, dtype=object), dtype=object)


def _embedding(f: FieldSpec, items: CandidateFeatures) -> np.ndarray:
    matrix = items.columns["embedding"]
    valid = items.valid[fn.TRACK_CONTENT]
    if matrix.ndim != 2 or matrix.shape[1] != f.dim:
        if valid.any():  # real vectors of another length: a store/bundle mismatch worth a line in the log
            log.warning("store embeddings have shape %s, spec %r wants dim %d: zeros", matrix.shape, f.name, f.dim)
        return np.zeros((len(items), f.dim), dtype=np.float32)
    if valid.all():
        return matrix
    return np.where(valid[:, None], matrix, np.float32(0)).astype(np.float32)


def _token(f: FieldSpec, items: CandidateFeatures) -> pd.Series:
    layer = int(AUDIO_TOKEN.match(f.column).group(1))  # type: ignore[union-attr]  # _source checked it
    tokens = items.columns["tokens"]
    if tokens.ndim != 2 or layer >= tokens.shape[1]:
        if items.valid[fn.TRACK_CONTENT].any():  # the store's token lists are shorter than the spec expects
            log.warning("store tokens have shape %s, spec %r wants layer %d: OOV", tokens.shape, f.name, layer)
        return pd.Series(np.full(len(items), np.nan))
    return _column(tokens[:, layer], items.valid[fn.TRACK_CONTENT])
