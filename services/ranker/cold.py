"""Cold tracks' scores on the warm scale (encore/cold_calibration.py), each placed against a reference panel.

A row is cold when its item id is OOV to the spec (a track the model never trained on). Its raw score is
compared with the same track's raw scores for the calibration's reference listeners: the item inputs of the
row are kept and the user inputs swapped for each panel member's, so any CTR model works unchanged. The
panel's sorted scores are cached per distinct item input, whoever asks (a re-uploaded track with new content is
new), so a cold track costs one panel scoring, not one per request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from encore.cold_calibration import ColdCalibration, cold_rows
from encore.schema import FeatureSpec

Packed = dict[str, np.ndarray]
CACHE_SIZE = 20_000  # tracks; each entry is one float32 per panel member


class ColdScores:
    def __init__(self, spec: FeatureSpec, calibration: ColdCalibration, panel_inputs: Packed):
        self.spec, self.calibration = spec, calibration
        # Which packed columns belong to the user: those are swapped for the panel's.
        self.user_columns = {
            "sparse": [i for i, f in enumerate(spec.sparse_fields) if f.owner == "user"],
            "numeric": [i for i, f in enumerate(spec.scaled_fields) if f.owner == "user"],
        }
        self.user_inputs = [f.name for f in spec.token_fields + spec.dense_fields if f.owner == "user"]
        self.panel = panel_inputs  # packed inputs of the panel, one row per member
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def panel_size(self) -> int:
        return len(next(iter(self.panel.values())))

    def __call__(self, packed: Packed, raw: np.ndarray, score: Callable[[Packed], np.ndarray]) -> np.ndarray:
        cold = cold_rows(self.spec, packed)
        if not cold.any():
            return raw
        rows = np.flatnonzero(cold)
        panel_quantile = np.array([self._panel_quantile(packed, i, raw[i], score) for i in rows])
        out = raw.astype(np.float32, copy=True)
        out[rows] = self.calibration.warm_scores(raw[rows], panel_quantile)
        return out

    def _panel_quantile(self, packed: Packed, row: int, raw: float, score: Callable[[Packed], np.ndarray]) -> float:
        key = self._item_key(packed, row)
        with self._lock:
            panel_scores = self._cache.get(key)
            if panel_scores is not None:
                self._cache.move_to_end(key)
        if panel_scores is None:
            panel_scores = np.sort(score(self._with_panel_users(packed, row)))
            with self._lock:
                self._cache[key] = panel_scores
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return float(np.searchsorted(panel_scores, raw, side="right")) / len(panel_scores)

    def _item_key(self, packed: Packed, row: int) -> bytes:
        """The row's item inputs only: one cache entry per track (and content), whichever listener asked."""
        parts = []
        for name in sorted(packed):
            if name in self.user_inputs:
                continue
            values = packed[name][row]
            if name in self.user_columns:
                values = np.delete(values, self.user_columns[name])
            parts.append(np.ascontiguousarray(values).tobytes())
        return b"".join(parts)

    def _with_panel_users(self, packed: Packed, row: int) -> Packed:
        """The row repeated once per panel member, with the member's user inputs in place of the listener's."""
        n = self.panel_size
        tiled = {name: np.repeat(values[row : row + 1], n, axis=0) for name, values in packed.items()}
        for name, columns in self.user_columns.items():
            if columns:
                tiled[name][:, columns] = self.panel[name][:, columns]
        for name in self.user_inputs:
            tiled[name] = self.panel[name]
        return tiled
