"""The ranker's feature frame: spec fields -> columns cut from the store's features, one builder for training
and serving.

A field's `column` names a store field: user fields come from `user_profile` (user_id, country, age, gender,
n_plays, n_tracks), item fields from `track_meta` (track_id, artist_id, genre, key, mode, language,
release_year, popularity), and content as `audio_emb` (dense <- track_content.embedding), `audio_tok_{i}`
(categorical <- track_content.tokens[i]) and `audio_missing` (categorical: 1 when the track has no content,
else 0). Context fields come from the request (serving) or the rows (training). Recent-event features
(`ACTIVITY_COLUMNS`: the listener's n_play, n_skip, n_like, n_dislike and skip_rate from `user_activity`) are
user fields too: serving passes the online row's values in the `user` mapping, training the values as of each
row in the rows' own columns (`encore.events.activity_before`: from events strictly before the row); a listener
without events has 0 for each (never OOV), as float64 on both sides.

One (user, track) field: `content_affinity` (CONTENT_AFFINITY, numeric, owner "user"), the cosine between the
listener's running content profile (user_activity's `profile`, float32, and `profile_n`) and the track's content
embedding, 0 when the listener has no profile or the track no content. Both sides compute it with one function,
`content_affinity`, from the profile serving passes in the `user` mapping (the online row's) and training in the
rows' own `profile`/`profile_n` columns (`encore.events.profile_before`: from events strictly before the row).
It is neither an item field nor a per-user one: the ranker computes and encodes it per request for the
candidates (`is_pair_field`; services/ranker/pair_inputs.py).

Two entry points, one code path (`_frame`), so the two sides cannot drift:
- `build_frame(fields, user_id, user, items)`: one listener and their candidates (the ranker, per request);
- `training_frame(rows, users, track_meta, track_content, fields)`: (user, track[, label]) rows joined with
  the store's feature tables (the bootstrap, for every frame it fits, trains, validates and tests on).

Missing values (unknown user, a track without meta or content, a track the store does not know) become
None/NaN, which the spec's encoder maps to OOV; a missing dense vector becomes zeros. Columns keep the
store's dtypes (strings, int64, float32) where nothing is missing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from encore import feature_names as fn
from encore.errors import SpecError
from encore.schema import FeatureSpec, FieldConfig, FieldSpec

if TYPE_CHECKING:  # the track table reads the store; training builds frames without one
    from encore.track_table import TrackBatch, TrackTable

log = logging.getLogger(__name__)

AUDIO_EMBEDDING = "audio_emb"  # dense field <- track_content.embedding
AUDIO_TOKEN_PREFIX = "audio_tok_"  # categorical field audio_tok_<i> <- track_content.tokens[i]
AUDIO_TOKEN = re.compile(rf"^{AUDIO_TOKEN_PREFIX}(\d+)$")
AUDIO_MISSING = "audio_missing"  # categorical: 1 where the track has no content row, else 0

USER_COLUMNS: tuple[str, ...] = (fn.USER_ID, *fn.USER_PROFILE_FIELDS)
ITEM_COLUMNS: tuple[str, ...] = (fn.TRACK_ID, *fn.TRACK_META_FIELDS)
CONTENT_ARRAYS: dict[str, type] = {"embedding": np.float32, "tokens": np.int64}  # store dtypes of the content arrays
ITEM_SOURCES = frozenset({"track_id", "item", "embedding", "token", "content_missing"})
ACTIVITY_COLUMNS: tuple[str, ...] = ("n_play", "n_skip", "n_like", "n_dislike", "skip_rate")  # user_activity scalars
PROFILE, PROFILE_N = "profile", "profile_n"  # user_activity's running content profile (float32 mean) and its count
CONTENT_AFFINITY = "content_affinity"  # (user, track): cosine(listener's content profile, track's embedding)

Field = FieldConfig | FieldSpec  # both carry name, kind, owner, column and dim


def audio_token(i: int) -> str:
    """The column of content token i."""
    return f"{AUDIO_TOKEN_PREFIX}{i}"


@dataclass(frozen=True)
class TrackFeatures:
    """Store features of tracks, one row per requested track in order (duplicates kept)."""

    track_ids: list[str]
    columns: dict[str, np.ndarray]  # store field -> (n,) array, or (n, d) for embedding / (n, t) for tokens
    valid: dict[str, np.ndarray]  # view (track_meta, track_content) -> (n,) bool: the row holds real values
    rows: np.ndarray | None = None  # rows in `table` when every track was found there (serving: lets the
    generation: int = -1  # ranker gather pre-encoded item inputs instead of encoding them again)
    table: TrackTable | None = None  # the table `rows` index into, at `generation`

    @classmethod
    def align(
        cls, track_ids: Sequence[str], found: np.ndarray, batch: TrackBatch, table: TrackTable | None = None
    ) -> TrackFeatures:
        """Scatter a TrackBatch (rows of the found tracks, in order) onto all tracks.

        `found[i]` says whether track i is in `batch`; the rest get placeholder values marked invalid.
        """
        if found.all():  # the usual case: every candidate is in the table, nothing to scatter
            return cls(list(track_ids), dict(batch.columns), dict(batch.present), batch.rows, batch.generation, table)
        n = len(track_ids)
        columns = {}
        for name, values in batch.columns.items():
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
    def unknown(cls, track_ids: Sequence[str]) -> TrackFeatures:
        """Tracks with no store features at all (store down, or a smoke test): everything missing."""
        n = len(track_ids)
        columns: dict[str, np.ndarray] = {name: np.full(n, None, dtype=object) for name in fn.TRACK_META_FIELDS}
        columns.update({name: np.zeros((n, 0), dtype=dtype) for name, dtype in CONTENT_ARRAYS.items()})
        return cls(list(track_ids), columns, {view: np.zeros(n, dtype=bool) for view in fn.TRACK_VIEWS})

    @classmethod
    def from_tables(
        cls, track_ids: Sequence[str], track_meta: pd.DataFrame, track_content: pd.DataFrame
    ) -> TrackFeatures:
        """The rows of the store's track_meta / track_content tables (track_id + fields) for `track_ids`."""
        meta = track_meta.set_index(track_meta[fn.TRACK_ID].astype(str))
        content = track_content.set_index(track_content[fn.TRACK_ID].astype(str))
        meta_rows, content_rows = meta.index.get_indexer(track_ids), content.index.get_indexer(track_ids)
        columns = {name: _gather(meta[name].to_numpy(), meta_rows) for name in fn.TRACK_META_FIELDS}
        for name, dtype in CONTENT_ARRAYS.items():
            matrix = np.stack(content[name].to_numpy()).astype(dtype) if len(content) else np.zeros((0, 0), dtype)
            columns[name] = _gather(matrix, content_rows)
        valid = {fn.TRACK_META: meta_rows >= 0, fn.TRACK_CONTENT: content_rows >= 0}
        return cls(list(track_ids), columns, valid)

    def __len__(self) -> int:
        return len(self.track_ids)

    def value(self, name: str, row: int) -> Any:
        """One python value for the response (None where the track has no row in that view)."""
        return self.values(name, [row])[0]

    def values(self, name: str, rows: Sequence[int]) -> list[Any]:
        """`value(name, row)` for each of `rows`, in one gather (the k tracks of an answer)."""
        view = fn.TRACK_CONTENT if name in fn.TRACK_CONTENT_FIELDS else fn.TRACK_META
        if name not in self.columns:
            return [None] * len(rows)
        picked, held = self.columns[name][rows].tolist(), self.valid[view][rows].tolist()
        picked = [v.item() if isinstance(v, np.generic) else v for v in picked]  # object columns may hold numpy scalars
        return [v if ok else None for v, ok in zip(picked, held, strict=True)]


def check_fields(fields: Sequence[Field]) -> None:
    """Fail loudly on a field the builder cannot fill (checked when a bundle is loaded)."""
    unknown = [f"{f.name} (column {f.column!r}, owner {f.owner})" for f in fields if _source(f) is None]
    if unknown:
        raise SpecError(
            f"the ranker has no source for spec field(s) {unknown}; user columns are {list(USER_COLUMNS)} and "
            f"{list(ACTIVITY_COLUMNS)} and {CONTENT_AFFINITY!r} (numeric, owner 'user'), "
            f"item columns {list(ITEM_COLUMNS)}, content {AUDIO_EMBEDDING!r}, 'audio_tok_<i>' and {AUDIO_MISSING!r}, "
            "and context fields need owner 'context'"
        )


def uses_activity(fields: FeatureSpec | Sequence[Field]) -> bool:
    """Whether the fields read recent-event features or the content profile (serving must then pass the
    user_activity row)."""
    fields = fields.fields if isinstance(fields, FeatureSpec) else fields
    return any(_source(f) in ("activity", "affinity") for f in fields)


def is_item_field(f: Field) -> bool:
    """True for fields whose value depends on the track only (the ranker encodes those once per track)."""
    return _source(f) in ITEM_SOURCES


def is_pair_field(f: Field) -> bool:
    """True for fields whose value depends on the (user, track) pair (the ranker encodes those per request)."""
    return _source(f) == "affinity"


def content_affinity(
    profiles: np.ndarray, profile_n: np.ndarray, embeddings: np.ndarray, has_content: np.ndarray
) -> np.ndarray:
    """cos(profile_i, embedding_i) per row, float64: the one computation of `content_affinity` for training and
    serving. `profiles` (n, d): the listener's profile as the store keeps it (float32), a broadcast view of one
    vector at serving; `profile_n` (n,): how many tracks it averages; `embeddings` (n, d'): the tracks' content;
    `has_content` (n,) bool. 0 where profile_n is 0, the track has no content, a vector is all zeros, or the
    lengths differ (no profile yet, or another encoder's vectors).

    Every row is reduced on its own: the float64 products are laid out C-contiguous (n, d) and summed along the
    last axis, which numpy does row by row with the same (pairwise) order for any n, so a row's bits do not depend
    on the batch it is computed in: a request's n candidates and a training frame's rows agree
    (tests/training/test_affinity_skew.py checks a row alone against it in batches).
    """
    n = len(has_content)
    out = np.zeros(n, dtype=np.float64)
    p, e = np.asarray(profiles), np.asarray(embeddings)
    if n == 0 or p.ndim != 2 or e.ndim != 2 or p.shape[1] != e.shape[1] or p.shape[1] == 0:
        return out
    p64 = np.ascontiguousarray(p, dtype=np.float64)  # a broadcast view (one listener) becomes n real rows
    e64 = np.ascontiguousarray(e, dtype=np.float64)
    dot, pp, ee = ((a * b).sum(axis=1) for a, b in ((p64, e64), (p64, p64), (e64, e64)))
    norm = np.sqrt(pp) * np.sqrt(ee)
    ok = (np.asarray(profile_n) > 0) & np.asarray(has_content, dtype=bool) & (norm > 0)
    out[ok] = dot[ok] / norm[ok]
    return out


def build_frame(
    fields: FeatureSpec | Sequence[Field],
    user_id: str,
    user: Mapping[str, Any] | None,
    items: TrackFeatures,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One listener and their candidates: column -> values for every field (a FeatureSpec's fields when a
    spec is given), one row per candidate, ready for `spec.encode_packed`."""
    n = len(items)
    context = context or {}
    return _frame(
        fields.fields if isinstance(fields, FeatureSpec) else fields,
        items,
        user_id=lambda: _constant(user_id, n),
        user=lambda name: _constant(None if user is None else user.get(name), n),
        context=lambda name: _constant(context.get(name), n),
        profile=lambda: _one_profile(user, n),
    )


def training_frame(
    rows: pd.DataFrame,
    users: pd.DataFrame,
    track_meta: pd.DataFrame,
    track_content: pd.DataFrame,
    fields: Sequence[Field],
    label: str = "label",
) -> pd.DataFrame:
    """(user_id, track_id[, label, context columns]) rows joined with the store's feature tables (user_profile,
    track_meta, track_content frames keyed by id), as the ranker builds them at serving time."""
    user_ids = rows[fn.USER_ID].astype(str).to_numpy(dtype=object)
    items = TrackFeatures.from_tables(rows[fn.TRACK_ID].astype(str).tolist(), track_meta, track_content)
    profiles = users.set_index(users[fn.USER_ID].astype(str))
    order = profiles.index.get_indexer(user_ids)
    n = len(rows)

    def context(name: str) -> pd.Series:
        return pd.Series(rows[name].to_numpy()) if name in rows else _constant(None, n)

    def user(name: str) -> pd.Series:
        if name in ACTIVITY_COLUMNS:  # as of each row (its own columns); none: no events before it
            return pd.Series(rows[name].to_numpy()) if name in rows else _constant(None, n)
        return _column(_gather(profiles[name].to_numpy(), order), order >= 0)

    def profile() -> tuple[np.ndarray, np.ndarray]:  # as of each row (its own columns); none: no profile yet
        if PROFILE not in rows or PROFILE_N not in rows:
            return np.zeros((n, 0), np.float32), np.zeros(n, np.int64)
        return _row_profiles(rows[PROFILE].to_numpy(dtype=object), rows[PROFILE_N].to_numpy())

    frame = _frame(fields, items, user_id=lambda: pd.Series(user_ids, dtype=object), user=user, context=context,
                   profile=profile)  # fmt: skip
    out = pd.DataFrame({name: list(v) if isinstance(v, np.ndarray) and v.ndim == 2 else v for name, v in frame.items()})
    if label in rows:
        out[label] = rows[label].to_numpy()
    return out


def _frame(
    fields: Sequence[Field],
    items: TrackFeatures,
    user_id: Callable[[], pd.Series],
    user: Callable[[str], pd.Series],
    context: Callable[[str], pd.Series],
    profile: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    frame: dict[str, Any] = {}
    for f in fields:
        if f.column in frame:  # two fields may read one column (say, bucketized and scaled)
            continue
        source = _source(f)
        if source == "context":
            frame[f.column] = context(f.column)
        elif source == "user_id":
            frame[f.column] = user_id()
        elif source == "user":
            frame[f.column] = user(f.column)
        elif source == "activity":
            frame[f.column] = _activity(user(f.column))
        elif source == "affinity":
            profiles, counts = profile()
            embeddings, has = items.columns.get("embedding", np.zeros((len(items), 0))), items.valid[fn.TRACK_CONTENT]
            frame[f.column] = pd.Series(content_affinity(profiles, counts, embeddings, has))
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


def _source(f: Field) -> str | None:
    if f.owner == "context":
        return "context"
    if f.column == fn.USER_ID:
        return "user_id"
    if f.column in fn.USER_PROFILE_FIELDS:
        return "user"
    if f.column in ACTIVITY_COLUMNS and f.owner == "user":
        return "activity"
    if f.column == CONTENT_AFFINITY and f.owner == "user" and f.kind == "numeric":
        return "affinity"
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


def _gather(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """values[order], with a placeholder where order is -1 (the caller marks those rows invalid)."""
    if len(values) == 0:
        shape = (len(order), *values.shape[1:])
        return np.full(shape, None, dtype=object) if values.dtype == object else np.zeros(shape, values.dtype)
    return values[np.where(order >= 0, order, 0)]


def _column(values: np.ndarray, valid: np.ndarray) -> pd.Series:
    """A store column as the encoder must see it: missing rows None (strings) or NaN (numbers).

    Complete columns keep the store's dtype. Integers with gaps go to float64 so NaN fits; the encoder maps
    integral floats back to "1999"-style strings, so those encode the same way too.
    """
    if valid.all():
        return pd.Series(values, dtype=object) if values.dtype == object else pd.Series(values)
    if values.dtype == object:
        return pd.Series(np.where(valid, values, None), dtype=object)
    out = values.astype(np.float64) if values.dtype.kind in "iub" else values.copy()
    out[~valid] = np.nan
    return pd.Series(out)


def _activity(values: pd.Series) -> pd.Series:
    """A recent-event count or rate: float64, 0 where the listener has no events (no online row, no earlier event)."""
    return pd.Series(pd.to_numeric(values, errors="coerce").fillna(0.0).to_numpy(np.float64))


def _one_profile(user: Mapping[str, Any] | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The online row's profile for each of n candidates (a broadcast view: one vector), and its count."""
    vector = None if user is None else user.get(PROFILE)
    count = None if user is None else user.get(PROFILE_N)
    count = 0 if count is None or not np.isfinite(count) else int(count)
    if vector is None or count <= 0:
        return np.zeros((n, 0), np.float32), np.zeros(n, np.int64)
    vector = np.asarray(vector, dtype=np.float32)  # the store's float32 values (a list from the online read)
    return np.broadcast_to(vector, (n, len(vector))), np.full(n, count, np.int64)


def _row_profiles(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row profiles (arrays, or None: no profile yet) stacked as (n, d) float32, with their counts (rows whose
    vector has another length than the most common one count as without a profile)."""
    n = len(values)
    counts = pd.to_numeric(pd.Series(counts), errors="coerce").fillna(0).to_numpy(np.int64)
    lengths = np.array([0 if v is None or (isinstance(v, float) and np.isnan(v)) else len(v) for v in values])
    has = (counts > 0) & (lengths > 0)
    if not has.any():
        return np.zeros((n, 0), np.float32), np.zeros(n, np.int64)
    dim = int(np.bincount(lengths[has]).argmax())
    has &= lengths == dim
    matrix = np.zeros((n, dim), np.float32)
    if has.any():
        matrix[has] = np.stack([np.asarray(v, dtype=np.float32) for v in values[has]])
    return matrix, np.where(has, counts, 0)


def _constant(value: Any, n: int) -> pd.Series:
    """A user or context value repeated for every row (None -> OOV)."""
    if value is None:
        return pd.Series([None] * n, dtype=object)
    if isinstance(value, bool | int | float | np.number | np.bool_):
        return pd.Series(np.full(n, value))  # int64 / float64 / bool, as in a training frame
    return pd.Series(np.full(n, value, dtype=object), dtype=object)


def _embedding(f: Field, items: TrackFeatures) -> np.ndarray:
    matrix = items.columns["embedding"]
    valid = items.valid[fn.TRACK_CONTENT]
    if matrix.ndim != 2 or matrix.shape[1] != f.dim:
        if valid.any():  # real vectors of another length: a store/bundle mismatch worth a line in the log
            log.warning("store embeddings have shape %s, spec %r wants dim %d: zeros", matrix.shape, f.name, f.dim)
        return np.zeros((len(items), f.dim), dtype=np.float32)
    if valid.all():
        return matrix
    return np.where(valid[:, None], matrix, np.float32(0)).astype(np.float32)


def _token(f: Field, items: TrackFeatures) -> pd.Series:
    layer = int(AUDIO_TOKEN.match(f.column).group(1))  # type: ignore[union-attr]  # _source checked it
    tokens = items.columns["tokens"]
    if tokens.ndim != 2 or layer >= tokens.shape[1]:
        if items.valid[fn.TRACK_CONTENT].any():  # the store's token lists are shorter than the spec expects
            log.warning("store tokens have shape %s, spec %r wants layer %d: OOV", tokens.shape, f.name, layer)
        return pd.Series(np.full(len(items), np.nan))
    return _column(tokens[:, layer], items.valid[fn.TRACK_CONTENT])
