"""The retriever's part of an artifact bundle: one writer (training, benchmarks, tests), one reader (the retriever).

`<bundle>/retriever/` holds user_ids.npy, item_ids.npy (unicode arrays), user_vectors.npy, item_vectors.npy
(float32), seen.npz (indptr, indices: what each user played, CSR), popularity.npy (int64 per item),
projection.npz (weight, bias, mean, std; only with content) and retriever.json (format, model, encoder,
metrics, and training's config, split sizes and history). Nothing needs pickle to load.
`manifest["components"]["retriever"]` = {"model", "path", "format_version", "dim", "n_users", "n_items",
"encoder", "projection", "metrics"}.

`ContentProjection` is the content-to-item map every recall model has: training fits it
(training/train_recall.py), the retriever applies it to tracks uploaded after the bundle was built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from encore.artifacts import Bundle, BundleBuilder, BundleError
from encore.errors import EncoreError
from encore.io import write_json_atomic

FORMAT_VERSION = 1


class ColdItemRefused(EncoreError):
    """A new track's content cannot be projected with this bundle (wrong encoder or length, no projection)."""


@dataclass(frozen=True)
class ContentProjection:
    """item vector = ((content - mean) / std) @ weight + bias; fit on training items only."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray  # (D,) float32
    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32
    encoder: dict[str, str]  # {"encoder": name, "encoder_revision": rev}: vectors from anything else are refused
    alpha: float = 0.0  # the ridge penalty picked by cross-validation
    cv_r2: float = 0.0  # cross-validated R^2 at that alpha, over training items (VBPR: of the id part)
    method: str = "ridge"  # "ridge", or "vbpr" (model's content layer + ridge for the id part)

    @property
    def content_dim(self) -> int:
        return len(self.mean)

    def apply(self, content: np.ndarray) -> np.ndarray:
        """(n, C) -> (n, D) float32."""
        return (((content - self.mean) / self.std) @ self.weight + self.bias).astype(np.float32)

    def check(self, embedding: np.ndarray, encoder: str, encoder_revision: str) -> None:
        """Raise ColdItemRefused unless the vector comes from this projection's encoder and has its length."""
        got = {"encoder": encoder, "encoder_revision": encoder_revision}
        if got != self.encoder:
            raise ColdItemRefused(f"content from encoder {got} cannot be mixed with this bundle's {self.encoder}")
        if embedding.ndim != 1 or len(embedding) != self.content_dim:
            raise ColdItemRefused(f"embedding has length {embedding.size}, bundle's encoder gives {self.content_dim}")
        if not np.isfinite(embedding).all():
            raise ColdItemRefused("embedding contains NaN or inf (or overflows float32)")


@dataclass(frozen=True)
class RetrieverComponent:
    NAME: ClassVar[str] = "retriever"  # the component, and its folder inside a bundle
    META: ClassVar[str] = "retriever.json"
    VECTORS: ClassVar[dict[str, str]] = {"user": "user_vectors.npy", "item": "item_vectors.npy"}

    model: str  # "BPR", "VBPR", "FREEDOM", "LGMRec": the candidates' source
    user_ids: np.ndarray  # (U,) str
    user_vectors: np.ndarray  # (U, D) float32
    item_ids: np.ndarray  # (I,) str
    item_vectors: np.ndarray  # (I, D) float32
    seen_indptr: np.ndarray  # (U + 1,) int64: user u played item_ids[seen_indices[indptr[u]:indptr[u+1]]]
    seen_indices: np.ndarray  # (nnz,) int32, sorted within each user
    popularity: np.ndarray  # (I,) int64
    projection: ContentProjection | None
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # retriever.json only: training config, data, history

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def write(self, builder: BundleBuilder) -> dict[str, Any]:
        """Write `<bundle>/retriever/`, record the component in the manifest and return its entry."""
        folder = builder.path / self.NAME
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "user_ids.npy", self.user_ids.astype(str), allow_pickle=False)
        np.save(folder / "item_ids.npy", self.item_ids.astype(str), allow_pickle=False)
        np.save(folder / self.VECTORS["user"], self.user_vectors.astype(np.float32), allow_pickle=False)
        np.save(folder / self.VECTORS["item"], self.item_vectors.astype(np.float32), allow_pickle=False)
        np.save(folder / "popularity.npy", self.popularity.astype(np.int64), allow_pickle=False)
        indptr, indices = self.seen_indptr.astype(np.int64), self.seen_indices.astype(np.int32)
        np.savez(folder / "seen.npz", indptr=indptr, indices=indices)
        projection = None
        if self.projection is not None:
            p = self.projection
            np.savez(folder / "projection.npz", weight=p.weight, bias=p.bias, mean=p.mean, std=p.std)
            projection = {"method": p.method, "alpha": p.alpha, "cv_r2": round(p.cv_r2, 6), "content_dim": len(p.mean)}
        entry = {
            "model": self.model,
            "path": self.NAME,
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "n_users": len(self.user_ids),
            "n_items": len(self.item_ids),
            "encoder": self.projection.encoder if self.projection else None,
            "projection": projection,
            "metrics": self.metrics,
        }
        write_json_atomic(folder / self.META, {**entry, **self.details})
        builder.manifest.setdefault("components", {})[self.NAME] = entry
        return entry

    @classmethod
    def read(cls, bundle: Bundle) -> RetrieverComponent:
        """Read `<bundle>/retriever/` (already checksum-verified by load_bundle) and check its shapes."""
        if cls.NAME not in bundle.components:
            raise BundleError(f"bundle {bundle.id} has no retriever component (components: {list(bundle.components)})")
        meta = json.loads(bundle.file(f"{cls.NAME}/{cls.META}").read_text())
        _require(meta.get("format_version") == FORMAT_VERSION, bundle, f"format {meta.get('format_version')}")
        user_ids, item_ids = _load_npy(bundle, "user_ids.npy"), _load_npy(bundle, "item_ids.npy")
        users, items = _load_npy(bundle, cls.VECTORS["user"]), _load_npy(bundle, cls.VECTORS["item"])
        popularity = _load_npy(bundle, "popularity.npy")
        with np.load(bundle.file(f"{cls.NAME}/seen.npz"), allow_pickle=False) as seen:
            indptr, indices = seen["indptr"], seen["indices"]
        n_users, n_items, dim = len(user_ids), len(item_ids), meta["dim"]
        _require(users.shape == (n_users, dim), bundle, f"user_vectors {users.shape}")
        _require(items.shape == (n_items, dim), bundle, f"item_vectors {items.shape}")
        _require(users.dtype == items.dtype == np.float32, bundle, "vectors must be float32")
        _require(bool(np.isfinite(users).all() and np.isfinite(items).all()), bundle, "vectors hold NaN or inf")
        _require(len(set(user_ids)) == n_users and len(set(item_ids)) == n_items, bundle, "duplicate ids")
        _require(popularity.shape == (n_items,), bundle, f"popularity {popularity.shape}")
        _require(indptr.shape == (n_users + 1,) and indptr[0] == 0 and indptr[-1] == len(indices), bundle, "seen")
        _require(bool((np.diff(indptr) >= 0).all()), bundle, "seen.indptr is not monotone")
        _require(len(indices) == 0 or 0 <= indices.min() <= indices.max() < n_items, bundle, "seen item out of range")
        projection = _read_projection(bundle, meta) if meta.get("projection") else None
        details = {key: meta[key] for key in ("config", "data", "history") if key in meta}
        return cls(str(meta.get("model", "BPR")), user_ids, users, item_ids, items, indptr, indices, popularity,
                   projection, meta.get("metrics") or {}, details)  # fmt: skip


def _read_projection(bundle: Bundle, meta: dict[str, Any]) -> ContentProjection:
    with np.load(bundle.file(f"{RetrieverComponent.NAME}/projection.npz"), allow_pickle=False) as p:
        about = meta["projection"]
        projection = ContentProjection(
            p["weight"], p["bias"], p["mean"], p["std"], dict(meta["encoder"]),
            float(about.get("alpha", 0.0)), float(about.get("cv_r2", 0.0)), str(about.get("method", "ridge")),
        )  # fmt: skip
    c, dim = projection.content_dim, meta["dim"]
    _require(projection.weight.shape == (c, dim), bundle, f"projection {projection.weight.shape}")
    _require(projection.bias.shape == (dim,) and projection.std.shape == (c,), bundle, "projection")
    _require(bool((projection.std > 0).all()), bundle, "projection.std must be positive")
    return projection


def _load_npy(bundle: Bundle, name: str) -> np.ndarray:
    return np.load(bundle.file(f"{RetrieverComponent.NAME}/{name}"), allow_pickle=False)


def _require(condition: bool, bundle: Bundle, message: str) -> None:
    if not condition:
        raise BundleError(f"bundle {bundle.id}: retriever files are inconsistent: {message}")
