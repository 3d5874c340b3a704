"""The request-side model inputs (user and context fields) of one listener, encoded without pandas.

The spec encoder (encore/schema.py) works on columns: for the one row a request has, building the frame and
encoding it cost ~1 ms, on every request whose user is not in the per-user cache (most of them with a large
audience). Each field's encoding depends on that field's value only, so one row is encoded field by field:
- a string in an id or categorical field is its vocabulary entry, else OOV (what the encoder's index lookup
  gives a string column);
- a python int or float in a numeric field is bucketed or scaled with the spec's own edges, mean and std, in
  float64 as the encoder does (then float32 for scaled values); non-finite values are OOV / 0;
- any other value (None, bools, numpy scalars, a number in a categorical field, token lists, ...) goes through
  the spec encoder itself, once per field and value (memoized), so rare types cannot drift from it.
`tests/services/ranker/test_request_inputs.py` checks every rule against the spec encoder's output.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

import numpy as np

from encore import feature_names as fn
from encore.ranker_frame import TrackFeatures, build_frame
from encore.schema import FIRST_VOCAB, OOV, FeatureSpec, FieldSpec

MEMO_SIZE = 4096  # values per field remembered from the spec encoder; past it the memo starts over
_UNHASHABLE = object()


class RequestInputs:
    """user_id + profile -> {field name: (1, ...) array}, equal to `spec.encode(build_frame(spec, ...))`."""

    def __init__(self, spec: FeatureSpec):
        """`spec`: request-side fields only (services/ranker/encoded_items.py, SplitSpec.request)."""
        self.spec = spec
        self.ids = {f.name: {t: i + FIRST_VOCAB for i, t in enumerate(f.vocab)} for f in spec.fields}
        self.edges = {f.name: [float(e) for e in f.edges] for f in spec.fields if f.kind == "numeric"}
        self.memo: dict[str, dict[tuple[type, Any], np.ndarray]] = {f.name: {} for f in spec.fields}

    def encode(self, user_id: str, user: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        slow: list[FieldSpec] = []
        for f in self.spec.fields:
            value = self._value(f, user_id, user)
            encoded = self._fast(f, value)
            if encoded is None:
                key = (type(value), value) if _hashable(value) else _UNHASHABLE
                encoded = self.memo[f.name].get(key) if key is not _UNHASHABLE else None
            if encoded is None:
                slow.append(f)
            else:
                out[f.name] = encoded
        if slow:  # the spec encoder, for the whole row (as the full path encodes it), remembered per field
            full = self.spec.encode(build_frame(self.spec, user_id, user, TrackFeatures.unknown(["?"])))
            for f in slow:
                out[f.name] = full[f.name]
                value = self._value(f, user_id, user)
                if _hashable(value):
                    memo = self.memo[f.name]
                    if len(memo) >= MEMO_SIZE:
                        memo.clear()
                    memo[(type(value), value)] = full[f.name]
            out = {f.name: out[f.name] for f in self.spec.fields}  # the spec's order, as its encoder gives
        return out

    @staticmethod
    def _value(f: FieldSpec, user_id: str, user: Mapping[str, Any] | None) -> Any:
        """What build_frame puts in the field's column: the user id, the profile's value, or None (context: a
        request carries none)."""
        if f.owner == "context":
            return None
        if f.column == fn.USER_ID:
            return user_id
        return None if user is None else user.get(f.column)

    def _fast(self, f: FieldSpec, value: Any) -> np.ndarray | None:
        kind, cls = f.kind, type(value)
        if kind in ("id", "categorical") and cls is str:
            return np.array([self.ids[f.name].get(value, OOV)], dtype=np.int64)
        if kind == "numeric" and (cls is float or (cls is int and -(2**63) <= value < 2**63)):
            x = float(value)
            if f.numeric_mode == "scale":
                scaled = (x - f.mean) / f.std if math.isfinite(x) else 0.0
                return np.array([scaled], dtype=np.float32)
            bucket = bisect_right(self.edges[f.name], x) + FIRST_VOCAB if math.isfinite(x) else OOV
            return np.array([bucket], dtype=np.int64)
        return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
