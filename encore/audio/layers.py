"""An encoder's pooled layers: one flat float32 vector per track, cut into layers of their own widths.

MusiCNN's pooled layers are 561, 64, 64, 64 and 200 wide (front end, mid end 1-3, penultimate); MFCC has one,
MuQ twelve of equal width. Every content array, in memory and on disk, is (N, sum(widths)), and the widths travel
beside it (an encoder's describe(), the codebooks, a catalog's manifest), so no code assumes one (L, D) block.
A uniform (N, L, D) array is still accepted where layers come in and is flattened row-major.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encore.errors import EncoreError


class LayerMismatch(EncoreError, ValueError):
    """Content whose shape does not fit the declared layer widths."""


@dataclass(frozen=True)
class LayerLayout:
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        if not widths or min(widths) < 1:
            raise LayerMismatch(f"layer widths must be positive, got {list(self.widths)}")
        object.__setattr__(self, "widths", widths)

    @classmethod
    def uniform(cls, n_layers: int, dim: int) -> LayerLayout:
        return cls((int(dim),) * int(n_layers))

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> LayerLayout:
        """From an encoder's describe() (or a manifest's copy): `layer_widths`, else n_layers x dim."""
        if info.get("layer_widths"):
            return cls(tuple(info["layer_widths"]))
        if info.get("n_layers") is None or info.get("dim") is None:
            raise LayerMismatch(f"encoder info declares neither layer_widths nor n_layers/dim: {sorted(info)}")
        return cls.uniform(info["n_layers"], info["dim"])

    @property
    def n_layers(self) -> int:
        return len(self.widths)

    @property
    def total(self) -> int:
        return sum(self.widths)

    @property
    def is_uniform(self) -> bool:
        return len(set(self.widths)) == 1

    @property
    def offsets(self) -> np.ndarray:
        """(L,) start of each layer in the flat vector."""
        return np.concatenate([[0], np.cumsum(self.widths)[:-1]]).astype(np.int64)

    def index(self, layer: int) -> int:
        """A layer index (negative counts from the end) checked against the layout."""
        if not -self.n_layers <= int(layer) < self.n_layers:
            raise LayerMismatch(f"layer {layer} out of range for {self.n_layers} layers")
        return int(layer) % self.n_layers

    def flatten(self, layers: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(total,), (N, total), a uniform (L, D) / (N, L, D), or a list of per-layer (w,) / (N, w) arrays ->
        (N, total) float32; anything else raises LayerMismatch."""
        if isinstance(layers, list | tuple):
            parts = [np.atleast_2d(np.asarray(p, dtype=np.float32)) for p in layers]
            if [p.shape[-1] for p in parts] != list(self.widths) or len({len(p) for p in parts}) != 1:
                raise LayerMismatch(f"expected layers of widths {list(self.widths)}, got {[p.shape for p in parts]}")
            return np.concatenate(parts, axis=1)
        x = np.asarray(layers, dtype=np.float32)
        if x.ndim in (2, 3) and x.shape[-2:] == (self.n_layers, self.widths[0]) and self.is_uniform:
            x = x.reshape(-1 if x.ndim == 3 else 1, self.total)
        elif x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.total:
            raise LayerMismatch(f"expected content of {self.total} values (layers {list(self.widths)}), got {x.shape}")
        return x

    def layer(self, flat: np.ndarray, layer: int) -> np.ndarray:
        """(N, total) -> (N, width of `layer`)."""
        i = self.index(layer)
        start = int(self.offsets[i])
        return flat[:, start : start + self.widths[i]]

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """(N, total) -> one (N, w) view per layer."""
        return [self.layer(flat, i) for i in range(self.n_layers)]

    def segment_sums(self, values: np.ndarray) -> np.ndarray:
        """(..., total) -> (..., L): the sum over each layer's values."""
        return np.add.reduceat(values, self.offsets, axis=-1)

    def per_value(self, per_layer: np.ndarray) -> np.ndarray:
        """(..., L) -> (..., total): each layer's value repeated over its width."""
        return np.repeat(per_layer, self.widths, axis=-1)
