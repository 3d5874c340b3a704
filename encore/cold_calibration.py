"""Scores of tracks the ranker never trained on, put on the scale of the tracks it did (a ranker bundle component).

The CTR model scores a cold track (an upload: no trained id, unknown metadata, popularity 0) from its audio.
Those scores are systematically lower than warm ones, because popularity is unknown, so without calibration a
new track could only reach a listener's list by an extreme score. Training scores the same validation rows
twice, as they are and as uploads would look (training/bootstrap.py `as_cold`), and keeps both score
distributions, plus a small panel of reference listeners. Serving puts a cold track's score for a listener
at a quantile, a weighted mean (panel_weight) of two: where the score falls among all cold scores (is this a
good cold match?), and where it falls among the same track's scores for the panel (does this listener like it
more than most?); the score given is the warm score at that quantile. A cold track's score is thereby bounded
by the warm range, and every track ranks high for the listeners it suits best rather than for everyone or no one.

Written by the bootstrap as `ranker/cold_calibration.json`; read by the ranker (services/ranker/bundle.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encore.io import write_json_atomic
from encore.schema import OOV, FeatureSpec

FILE = "ranker/cold_calibration.json"
FORMAT_VERSION = 1
N_QUANTILES = 101
_LEVELS = np.linspace(0, 1, N_QUANTILES)


@dataclass(frozen=True)
class ColdCalibration:
    cold_quantiles: np.ndarray  # (N_QUANTILES,) non-decreasing: the model's scores of rows shown as cold
    warm_quantiles: np.ndarray  # (N_QUANTILES,) non-decreasing: its scores of the same rows as they are
    reference_users: list[dict]  # the panel: user_id + profile fields, as the store holds them
    # Of the panel quantile against the global one. 1.0: a new track's place in a list depends only on how much
    # more this listener likes it than the panel does, so every track reaches the listeners it suits best. At 0.5
    # a real clip, whose raw score against a rendered catalog is low for everyone, could not rise above the warm
    # median for anyone, and 1 of 12 real clips reached nobody's top-50 (docs/real_audio.md, rows 12 and 13).
    panel_weight: float = 1.0

    @classmethod
    def fit(
        cls, warm_scores: np.ndarray, cold_scores: np.ndarray, reference_users: list[dict], panel_weight: float = 1.0
    ) -> ColdCalibration:
        calibration = cls(
            np.quantile(np.asarray(cold_scores, np.float64), _LEVELS),
            np.quantile(np.asarray(warm_scores, np.float64), _LEVELS),
            list(reference_users),
            float(panel_weight),
        )
        calibration.check()
        return calibration

    def warm_scores(self, cold_scores: np.ndarray, panel_quantile: np.ndarray | None = None) -> np.ndarray:
        """Cold rows' raw scores -> warm-scale scores; `panel_quantile` (same shape) is each row's place among
        its track's scores for the reference panel, in [0, 1] (None: the global quantile alone)."""
        quantile = np.interp(cold_scores, self.cold_quantiles, _LEVELS)
        if panel_quantile is not None:
            quantile = (1 - self.panel_weight) * quantile + self.panel_weight * panel_quantile
        return np.interp(quantile, _LEVELS, self.warm_quantiles).astype(np.float32)

    def check(self) -> None:
        for q in (self.cold_quantiles, self.warm_quantiles):
            if q.shape != (N_QUANTILES,) or not np.isfinite(q).all() or (np.diff(q) < 0).any():
                raise ValueError(f"cold calibration: quantiles must be {N_QUANTILES} finite non-decreasing values")
        if not 0 <= self.panel_weight <= 1:
            raise ValueError("cold calibration: panel_weight must lie in [0, 1]")
        if not self.reference_users or not all(isinstance(u, dict) and "user_id" in u for u in self.reference_users):
            raise ValueError("cold calibration: reference_users must be a non-empty list of user rows")

    def write(self, path: str | Path) -> None:
        doc = {
            "format_version": FORMAT_VERSION,
            "cold": self.cold_quantiles.tolist(),
            "warm": self.warm_quantiles.tolist(),
            "reference_users": self.reference_users,
            "panel_weight": self.panel_weight,
        }
        write_json_atomic(path, doc)

    @classmethod
    def read(cls, path: str | Path) -> ColdCalibration:
        doc = json.loads(Path(path).read_text())
        if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"cold calibration: not a version-{FORMAT_VERSION} calibration document")
        cold, warm = np.asarray(doc.get("cold"), np.float64), np.asarray(doc.get("warm"), np.float64)
        calibration = cls(cold, warm, doc.get("reference_users") or [], doc.get("panel_weight", -1.0))
        calibration.check()
        return calibration


def cold_rows(spec: FeatureSpec, packed: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) bool: rows whose item id the model never trained on (encoded as OOV)."""
    sparse = [f.name for f in spec.sparse_fields]
    item_ids = [f.name for f in spec.sparse_fields if f.kind == "id" and f.owner == "item"]
    if not item_ids:
        return np.zeros(len(next(iter(packed.values()))), dtype=bool)
    return packed["sparse"][:, sparse.index(item_ids[0])] == OOV
