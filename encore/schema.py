"""Feature spec: the one contract between datasets, models, export and the ranker.

A spec is fit on the training split only (vocabularies, bucket edges, scaling), saved as JSON, and then
encodes any frame (valid, test, a live request) with the same numpy code, so serving cannot drift.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from encore.errors import SpecError
from encore.io import write_json_atomic

FieldKind = Literal["id", "categorical", "numeric", "token_list", "dense"]
Owner = Literal["user", "item", "context"]
NumericMode = Literal["equal_width", "quantile", "log", "scale"]

PAD = 0  # index 0: padding (token lists only); never a real value
OOV = 1  # index 1: unknown or missing value; vocabulary starts at 2
FIRST_VOCAB = 2
SPEC_VERSION = 1


@dataclass
class FieldConfig:
    """What a dataset declares about one input field, before anything is fit."""

    name: str
    kind: FieldKind
    owner: Owner = "context"
    source: str | None = None  # column in the frame; defaults to `name`
    min_count: int = 1  # id/categorical/token_list: rarer values map to OOV
    numeric_mode: NumericMode = "quantile"
    n_buckets: int = 10
    max_len: int = 8  # token_list: longer lists are truncated, shorter padded with PAD
    separator: str = "|"  # token_list given as one string per row
    dim: int = 0  # dense: vector length, checked on every row

    @property
    def column(self) -> str:
        return self.source or self.name


@dataclass
class FieldSpec:
    """One fitted field: everything needed to encode a value, and nothing else."""

    name: str
    kind: FieldKind
    owner: Owner
    column: str
    vocab: list[str] = field(default_factory=list)  # id/categorical/token_list
    numeric_mode: NumericMode | None = None
    edges: list[float] = field(default_factory=list)  # bucketized numeric
    mean: float = 0.0  # scaled numeric
    std: float = 1.0
    max_len: int = 0
    separator: str = "|"
    dim: int = 0

    @property
    def is_sparse(self) -> bool:
        """One index per row: ids, categoricals and bucketized numerics share the stacked input."""
        return self.kind in ("id", "categorical") or (self.kind == "numeric" and self.numeric_mode != "scale")

    @property
    def num_embeddings(self) -> int:
        """Rows of this field's embedding table (PAD + OOV + values)."""
        if self.kind in ("id", "categorical", "token_list"):
            return FIRST_VOCAB + len(self.vocab)
        if self.kind == "numeric" and self.numeric_mode != "scale":
            return FIRST_VOCAB + len(self.edges) + 1
        return 0


class FeatureSpec:
    """An ordered set of fitted fields, with the numpy encoder that training and serving share."""

    def __init__(self, fields: Sequence[FieldSpec], label: str | None = "label"):
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise SpecError(f"duplicate field names in spec: {names}")
        self.fields = list(fields)
        self.label = label
        # Built once: rebuilding a vocabulary index per call cost ~3 ms per ranker request.
        self._lookups = {f.name: _Lookup(f.vocab) for f in self.fields if f.vocab}

    # ---- fitting (training split only) -------------------------------------------------------
    @classmethod
    def fit(cls, train: pd.DataFrame, configs: Sequence[FieldConfig], label: str | None = "label") -> FeatureSpec:
        check_columns(train, configs, label)
        if len(train) == 0:
            raise SpecError("cannot fit a feature spec on an empty training split")
        return cls([_fit_field(train, c) for c in configs], label=label)

    @classmethod
    def fit_counts(
        cls, counts: Mapping[str, pd.Series], configs: Sequence[FieldConfig], label: str | None = "label"
    ) -> FeatureSpec:
        """The spec `fit` gives, from each field's `field_counts` summed over every chunk of the training rows:
        fitting without holding the rows at once (training/streaming.py). Id, categorical and numeric fields.

        Id/categorical vocabularies and numeric bucket edges (quantile, equal_width, log) are exactly `fit`'s:
        the counts of each distinct value hold every order statistic, the minimum and the maximum. A `scale`
        field's mean and std are summed over the distinct values instead of numpy's pairwise sum over the rows:
        equal to `fit`'s within ~1e-12 relative (float rounding), so such a spec may differ in its hash."""
        other = [c.name for c in configs if c.kind not in ("id", "categorical", "numeric")]
        if other:
            raise SpecError(f"fitting from counts takes id, categorical and numeric fields only, not {other}")
        if not any(counts[c.name].sum() for c in configs):
            raise SpecError("cannot fit a feature spec on an empty training split")
        fields = []
        for c in configs:
            if c.kind == "numeric":
                fields.append(_numeric_from_counts(counts[c.name], c))
            else:
                vocab = _vocabulary_from_counts(counts[c.name], c.min_count)
                fields.append(FieldSpec(c.name, c.kind, c.owner, c.column, vocab=vocab))
        return cls(fields, label=label)

    # ---- groups of fields, in spec order (the packed model inputs follow these) ----------------
    @property
    def sparse_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.is_sparse]

    @property
    def scaled_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "numeric" and f.numeric_mode == "scale"]

    @property
    def token_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "token_list"]

    @property
    def dense_fields(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "dense"]

    def input_names(self) -> list[str]:
        """Names of the packed model inputs, in the order models and ONNX graphs take them."""
        names = ["sparse"] if self.sparse_fields else []
        names += ["numeric"] if self.scaled_fields else []
        return names + [f.name for f in self.token_fields] + [f.name for f in self.dense_fields]

    def __getitem__(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    # ---- encoding -----------------------------------------------------------------------------
    def encode(self, frame: pd.DataFrame | Mapping[str, object]) -> dict[str, np.ndarray]:
        """Encode every field of `frame` (a DataFrame, or a mapping of column -> values)."""
        columns = set(frame.columns) if isinstance(frame, pd.DataFrame) else set(frame.keys())
        missing = [f.column for f in self.fields if f.column not in columns]
        if missing:
            raise SpecError(f"missing column(s) {missing}; the spec needs {[f.column for f in self.fields]}")
        return {f.name: _encode_field(f, frame[f.column], self._lookups.get(f.name)) for f in self.fields}

    def pack(self, encoded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Group encoded fields into the model's inputs: one stacked int64 `sparse` matrix etc."""
        packed: dict[str, np.ndarray] = {}
        if self.sparse_fields:
            packed["sparse"] = np.stack([encoded[f.name] for f in self.sparse_fields], axis=1)
        if self.scaled_fields:
            packed["numeric"] = np.stack([encoded[f.name] for f in self.scaled_fields], axis=1)
        for f in self.token_fields + self.dense_fields:
            packed[f.name] = encoded[f.name]
        return packed

    def encode_packed(self, frame: pd.DataFrame | Mapping[str, object]) -> dict[str, np.ndarray]:
        return self.pack(self.encode(frame))

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        if self.label is None or self.label not in frame.columns:
            raise SpecError(f"label column {self.label!r} missing; columns are {list(frame.columns)}")
        values = pd.to_numeric(frame[self.label], errors="coerce").to_numpy(dtype=np.float32)
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise SpecError(f"label {self.label!r} must be 0 or 1; row {row} has {frame[self.label].iloc[row]!r}")
        return values

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": SPEC_VERSION, "label": self.label, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, doc: Mapping) -> FeatureSpec:
        if doc.get("version") != SPEC_VERSION:
            raise SpecError(f"feature spec version {doc.get('version')!r} is not {SPEC_VERSION}")
        return cls([FieldSpec(**f) for f in doc["fields"]], label=doc.get("label"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON: a bundle and a service agree on a spec by this value."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        return cls.from_dict(json.loads(Path(path).read_text()))


def check_columns(frame: pd.DataFrame, configs: Sequence[FieldConfig], label: str | None) -> None:
    """Fail loudly on a misnamed column, listing what the frame does have."""
    known = list(frame.columns)
    missing = [c.column for c in configs if c.column not in frame.columns]
    if label is not None and label not in frame.columns:
        missing.append(label)
    if missing:
        raise SpecError(f"unknown column(s) {missing}; the data has columns {known}")


def _fit_field(train: pd.DataFrame, cfg: FieldConfig) -> FieldSpec:
    spec = FieldSpec(name=cfg.name, kind=cfg.kind, owner=cfg.owner, column=cfg.column)
    values = train[cfg.column]
    if cfg.kind in ("id", "categorical"):
        spec.vocab = _vocabulary(_as_strings(values.dropna()), cfg.min_count)
    elif cfg.kind == "token_list":
        tokens = pd.Series([t for row in values for t in _as_token_list(row, cfg.separator)], dtype=object)
        spec.vocab = _vocabulary(tokens, cfg.min_count)
        spec.max_len, spec.separator = cfg.max_len, cfg.separator
    elif cfg.kind == "numeric":
        x = _as_float(values, cfg.name)
        x = x[np.isfinite(x)]
        if x.size == 0:
            raise SpecError(f"numeric field {cfg.name!r} has no finite value in the training split")
        spec.numeric_mode = cfg.numeric_mode
        if cfg.numeric_mode == "scale":
            spec.mean, spec.std = float(x.mean()), float(x.std()) or 1.0
        else:
            spec.edges = _bucket_edges(x, cfg.numeric_mode, cfg.n_buckets)
    elif cfg.kind == "dense":
        if cfg.dim <= 0:
            raise SpecError(f"dense field {cfg.name!r} needs dim > 0")
        spec.dim = cfg.dim
        _as_matrix(values, spec)  # validates the training rows
    else:
        raise SpecError(f"field {cfg.name!r}: unknown kind {cfg.kind!r}")
    return spec


def _vocabulary(values: pd.Series, min_count: int) -> list[str]:
    return _vocabulary_from_counts(values.value_counts(), min_count)


def categorical_counts(values: pd.Series) -> pd.Series:
    """Value counts of one id/categorical column, keyed as `FeatureSpec.fit` keys its vocabulary (strings), so
    counts summed over chunks of the training rows give `fit`'s vocabulary (`FeatureSpec.fit_counts`)."""
    counts = values.dropna().value_counts()  # count the raw values first: stringifying every row is the slow part
    return pd.Series(counts.to_numpy(), index=_as_strings(counts.index.to_series()).to_numpy())


def numeric_counts(values: pd.Series, name: str) -> pd.Series:
    """Counts of each distinct finite value of one numeric column (float64 index): summed over chunks of the
    training rows they give `fit`'s bucket edges exactly (`FeatureSpec.fit_counts`). Memory grows with the
    distinct values, not the rows."""
    x = _as_float(values, name)
    return pd.Series(x[np.isfinite(x)]).value_counts(sort=False)


def field_counts(values: pd.Series, cfg: FieldConfig) -> pd.Series:
    """What `FeatureSpec.fit_counts` sums over chunks for one field: value counts, keyed as `fit` keys them."""
    return numeric_counts(values, cfg.name) if cfg.kind == "numeric" else categorical_counts(values)


def _numeric_from_counts(counts: pd.Series, cfg: FieldConfig) -> FieldSpec:
    """`_fit_field`'s numeric spec from the counts of each distinct finite value."""
    counts = counts[counts > 0].sort_index()
    if counts.empty:
        raise SpecError(f"numeric field {cfg.name!r} has no finite value in the training split")
    spec = FieldSpec(name=cfg.name, kind=cfg.kind, owner=cfg.owner, column=cfg.column, numeric_mode=cfg.numeric_mode)
    values = counts.index.to_numpy(dtype=np.float64)
    weights = counts.to_numpy(dtype=np.float64)
    n = int(counts.sum())
    if cfg.numeric_mode == "scale":
        mean = float((values * weights).sum() / n)
        spec.mean, spec.std = mean, float(np.sqrt((weights * (values - mean) ** 2).sum() / n)) or 1.0
    elif cfg.numeric_mode == "quantile":
        spec.edges = _quantile_edges_from_counts(values, np.cumsum(counts.to_numpy()), n, cfg.n_buckets)
    else:  # equal_width and log read the minimum and maximum only
        spec.edges = _bucket_edges(values[[0, -1]], cfg.numeric_mode, cfg.n_buckets)
    return spec


def _quantile_edges_from_counts(values: np.ndarray, cumulative: np.ndarray, n: int, n_buckets: int) -> list[float]:
    """`np.quantile(x, q)` (linear method) of the rows behind sorted distinct `values` with `cumulative` counts.

    Each quantile sits between the order statistics floor((n - 1) q) and the next one, at fraction gamma;
    numpy itself interpolates them (np.quantile of the pair at gamma), so the result is its float, not a copy."""
    q = np.linspace(0, 1, n_buckets + 1)[1:-1]
    virtual = (n - 1) * q
    below = np.floor(virtual)
    gamma = virtual - below
    low = values[np.searchsorted(cumulative, below.astype(np.int64), side="right")]
    high = values[np.searchsorted(cumulative, np.minimum(below.astype(np.int64) + 1, n - 1), side="right")]
    edges = [np.quantile(np.array([a, b]), g) for a, b, g in zip(low, high, gamma, strict=True)]
    return [float(e) for e in np.unique(edges)]


def _vocabulary_from_counts(counts: pd.Series, min_count: int) -> list[str]:
    """Most frequent first, ties by value, so the same data always gives the same ids."""
    counts = counts[counts >= min_count]
    order = sorted(zip(counts.index, counts.to_numpy(), strict=True), key=lambda kv: (-kv[1], kv[0]))
    return [str(v) for v, _ in order]


def _bucket_edges(x: np.ndarray, mode: NumericMode, n_buckets: int) -> list[float]:
    if mode == "quantile":
        edges = np.quantile(x, np.linspace(0, 1, n_buckets + 1)[1:-1])
    elif mode == "equal_width":
        edges = np.linspace(x.min(), x.max(), n_buckets + 1)[1:-1]
    elif mode == "log":
        # log1p of the magnitude, equal width in log space: play counts and popularity are heavy-tailed
        lx = np.sign(x) * np.log1p(np.abs(x))
        edges = np.linspace(lx.min(), lx.max(), n_buckets + 1)[1:-1]
        edges = np.sign(edges) * np.expm1(np.abs(edges))
    else:
        raise SpecError(f"unknown numeric mode {mode!r}")
    return [float(e) for e in np.unique(edges)]


class _Lookup:
    """Value -> encoded id for one vocabulary, as a pandas index (batches) and a dict (token lists)."""

    def __init__(self, vocab: list[str]):
        self.index = pd.Index(vocab)
        self.ids = {t: i + FIRST_VOCAB for i, t in enumerate(vocab)}


def _encode_field(f: FieldSpec, values: object, lookup: _Lookup | None) -> np.ndarray:
    lookup = lookup or _Lookup(f.vocab)
    if f.kind in ("id", "categorical"):
        series = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
        idx = lookup.index.get_indexer(_as_strings(series))
        out = np.where(idx < 0, OOV, idx + FIRST_VOCAB).astype(np.int64)
        return np.where(pd.isna(series).to_numpy(), OOV, out)
    if f.kind == "numeric":
        x = _as_float(values, f.name)
        finite = np.isfinite(x)
        if f.numeric_mode == "scale":
            return np.where(finite, (x - f.mean) / f.std, 0.0).astype(np.float32)
        buckets = np.searchsorted(np.asarray(f.edges, dtype=np.float64), x, side="right") + FIRST_VOCAB
        return np.where(finite, buckets, OOV).astype(np.int64)
    if f.kind == "token_list":
        rows = list(values) if not isinstance(values, pd.Series) else values.tolist()
        out = np.full((len(rows), f.max_len), PAD, dtype=np.int64)
        for r, row in enumerate(rows):
            ids = [lookup.ids.get(t, OOV) for t in _as_token_list(row, f.separator)[: f.max_len]]
            out[r, : len(ids)] = ids
        return out
    if f.kind == "dense":
        return _as_matrix(values, f)
    raise SpecError(f"field {f.name!r}: unknown kind {f.kind!r}")


def _as_strings(values: pd.Series) -> pd.Series:
    # Integers read from CSV and ids sent as strings must map to the same vocabulary entry.
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")
    return values.astype(str)


def _as_float(values: object, name: str) -> np.ndarray:
    dtype = getattr(values, "dtype", None)
    if isinstance(values, pd.Series | np.ndarray) and isinstance(dtype, np.dtype) and dtype.kind == "f":
        return np.asarray(values, dtype=np.float64)  # numpy floats already: nothing to coerce or refuse
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise SpecError(f"numeric field {name!r} has a non-numeric value {series.iloc[row]!r} (row {row})")
    return converted.to_numpy(dtype=np.float64)


def _as_token_list(row: object, separator: str) -> list[str]:
    if row is None or (isinstance(row, float) and np.isnan(row)):
        return []
    if isinstance(row, str):
        return [t for t in row.split(separator) if t]
    return [str(t) for t in row]  # list / array of tokens


def _as_matrix(values: object, f: FieldSpec) -> np.ndarray:
    rows = values.tolist() if isinstance(values, pd.Series) else values
    try:
        matrix = np.asarray(np.stack([np.asarray(r, dtype=np.float32) for r in rows]), dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"dense field {f.name!r}: rows are not equal-length numeric vectors ({exc})") from exc
    if matrix.ndim != 2 or matrix.shape[1] != f.dim:
        raise SpecError(f"dense field {f.name!r} expects vectors of length {f.dim}, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise SpecError(f"dense field {f.name!r} has non-finite values")
    return matrix
