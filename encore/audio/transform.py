"""The one content transform: standardize with training-catalog statistics, then bound. Every content path uses it.

Training (dense content fields), the bootstrap, the embedder, the codebooks (tokens) and the retriever's
content-to-item map all see content only through `ContentTransform.apply`, so a vector from real music,
however far it lies from a rendered catalog, reaches no model with values the model never saw in training:
1. standardize per dimension, with each std floored at STD_FLOOR x the layer's median std (dimensions that
   barely vary across the catalog would otherwise turn small real-world differences into |z| in the hundreds);
2. clip each dimension to the range the training items span after step 1 (and to +-MAX_ABS_CONTENT);
3. shrink each layer's part of the vector to at most the largest norm a training item's has after step 2.
Content is flat, (N, sum(widths)), with the layers' widths beside it (encore/audio/layers.py): one layer for a
plain dense vector, MusiCNN's five layers of 561, 64, 64, 64 and 200 values.
The catalog's own items are changed only by step 1's floor. `typicality` says how far an input sat from the
catalog before bounding: the share of training items that lie at least as far from the centre (1 = central,
0 = beyond every training item).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encore.audio.layers import LayerLayout

STD_FLOOR = 0.1  # x the layer's median std
# No transformed value lies beyond this, whatever the training range (a heavy-tailed dimension can reach |z| ~
# sqrt(N)); the retriever's POST /items refuses content past it.
MAX_ABS_CONTENT = 8.0
_TINY = 1e-8
N_QUANTILES = 101  # of the training items' distance, for typicality


@dataclass(frozen=True)
class ContentTransform:
    """Arrays over one item's flat content (total,), or per layer (L,); broadcast over a leading batch axis."""

    mean: np.ndarray
    scale: np.ndarray  # floored std, > 0
    low: np.ndarray  # per-dimension bounds of the standardized training items
    high: np.ndarray
    max_norm: np.ndarray  # (L,): largest per-layer norm of a bounded training item
    distance_quantiles: np.ndarray  # (N_QUANTILES,) of the training items' RMS distance (standardized)
    widths: np.ndarray  # (L,) int64: the layers' widths, summing to the content's length

    @classmethod
    def fit(cls, vectors: np.ndarray, widths: Sequence[int] | None = None) -> ContentTransform:
        """vectors: (N, total) content of training-catalog items only; widths: its layers (default: one)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
            raise ValueError(f"need finite (N, total) vectors of at least 2 training items, got shape {x.shape}")
        layout = LayerLayout(tuple(widths) if widths is not None else (x.shape[1],))
        layout.flatten(x[:1])  # the widths must cover the vector exactly
        mean, std = x.mean(0), x.std(0)
        medians = np.array([np.median(part) for part in layout.split(std[None])], np.float64)
        scale = np.maximum(std, np.maximum(STD_FLOOR * layout.per_value(medians), _TINY))
        z = (x - mean) / scale
        low, high = np.maximum(z.min(0), -MAX_ABS_CONTENT), np.minimum(z.max(0), MAX_ABS_CONTENT)
        max_norm = np.sqrt(layout.segment_sums(np.clip(z, low, high) ** 2)).max(0)
        quantiles = np.quantile(_rms(z), np.linspace(0, 1, N_QUANTILES))
        f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
        widths_array = np.asarray(layout.widths, dtype=np.int64)
        return cls(f32(mean), f32(scale), f32(low), f32(high), f32(max_norm), f32(quantiles), widths_array)

    @property
    def layout(self) -> LayerLayout:
        return LayerLayout(tuple(int(w) for w in self.widths))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def standardize(self, vectors: np.ndarray) -> np.ndarray:
        """Step 1 only: (N, total) or (total,) -> (N, total), unbounded."""
        return (self._as_batch(vectors) - self.mean) / self.scale

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Standardized and bounded: (N, total) or (total,) -> (N, total) float32."""
        layout = self.layout
        z = np.clip(self.standardize(vectors), self.low, self.high)
        norm = np.sqrt(layout.segment_sums(z**2))
        shrink = np.minimum(1.0, self.max_norm / np.maximum(norm, _TINY))
        return (z * layout.per_value(shrink)).astype(np.float32)

    def typicality(self, vectors: np.ndarray) -> np.ndarray:
        """(N,) in [0, 1]: the share of training items at least as far from the catalog's centre."""
        distance = _rms(self.standardize(vectors))
        below = np.interp(distance, self.distance_quantiles, np.linspace(0, 1, N_QUANTILES), right=1.0)
        return (1.0 - below).astype(np.float32)

    @classmethod
    def tensor_names(cls, prefix: str = "transform.") -> set[str]:
        return {prefix + name for name in cls.__dataclass_fields__}

    def tensors(self, prefix: str = "transform.") -> dict[str, np.ndarray]:
        return {prefix + name: np.ascontiguousarray(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str = "transform.") -> ContentTransform:
        missing = cls.tensor_names(prefix) - set(tensors)
        if missing:
            raise ValueError(f"content transform: missing arrays {sorted(missing)}")
        transform = cls(**{name: tensors[prefix + name] for name in cls.__dataclass_fields__})
        transform.check()
        return transform

    def check(self) -> None:
        """Raise ValueError when the arrays do not form a valid transform (shapes, finiteness, order)."""
        shape = self.shape
        if len(shape) != 1 or self.widths.ndim != 1 or int(self.widths.sum()) != shape[0] or (self.widths < 1).any():
            raise ValueError(f"content transform: layer widths {self.widths.tolist()} do not cover its {shape}")
        for name in ("scale", "low", "high"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"content transform: {name} has shape {getattr(self, name).shape}, expected {shape}")
        if self.max_norm.shape != self.widths.shape or self.distance_quantiles.shape != (N_QUANTILES,):
            raise ValueError("content transform: max_norm or distance_quantiles has the wrong shape")
        arrays = self.tensors().values()
        if not all(np.isfinite(a).all() for a in arrays) or (self.scale <= 0).any() or (self.low > self.high).any():
            raise ValueError("content transform holds non-finite values, non-positive scales or inverted bounds")

    def describe(self) -> dict[str, Any]:
        return {
            "std_floor": f"{STD_FLOOR} x median std per layer",
            "bound": "training range per dim, max norm per layer",
            "layer_widths": self.widths.tolist(),
        }

    def _as_batch(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.shape == self.shape:
            x = x[None]
        if x.ndim != 2 or x.shape[1:] != self.shape:
            raise ValueError(f"expected content of shape (N, {self.shape[0]}), got {x.shape}")
        return x


def _rms(z: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N,): root mean square over all of an item's values."""
    return np.sqrt((z.reshape(len(z), -1) ** 2).mean(axis=1))
