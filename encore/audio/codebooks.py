"""Audio tokens: per-layer (and per-group) k-means codebooks over the content transform of pooled encoder layers.

Fit on training-catalog tracks only, together with the bundle's ContentTransform (standardize, then bound:
encore/audio/transform.py), which the dense vector goes through as well; saved as codebooks.safetensors +
codebooks.json (no pickle), and refused when applied to vectors from another encoder, revision or shape.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save

from encore.audio.transform import ContentTransform
from encore.errors import EncoreError
from encore.io import sha256_file, write_bytes_atomic, write_json_atomic

FORMAT_VERSION = 2  # 2: the bounded ContentTransform replaced a plain mean/std standardization
TENSORS_FILE = "codebooks.safetensors"
META_FILE = "codebooks.json"
# describe() keys that change what the vectors mean; free-text fields (pooling, policy) are not compared.
IDENTITY_KEYS = ("backend", "revision", "sample_rate", "window_seconds", "n_layers", "dim", "params")


class CodebookMismatch(EncoreError):
    """Codebooks and vectors come from different encoders, revisions or shapes."""


class Codebooks:
    def __init__(
        self,
        transform: ContentTransform,
        centroids: list[np.ndarray],
        groups: int,
        encoder_info: dict[str, Any],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.transform = transform  # one item's shape (L, D)
        self.centroids = centroids  # L * groups arrays, field f = layer * groups + group: (k, chunk_dim)
        self.groups = groups
        self.encoder_info = encoder_info
        self.meta = meta or {}
        self._validate()

    @property
    def n_layers(self) -> int:
        return int(self.transform.shape[0])

    @property
    def dim(self) -> int:
        return int(self.transform.shape[1])

    @property
    def k(self) -> int:
        return int(self.centroids[0].shape[0])

    @property
    def n_fields(self) -> int:
        return self.n_layers * self.groups

    @classmethod
    def fit(
        cls, layers: np.ndarray, *, encoder_info: dict[str, Any], k: int = 32, groups: int = 1, seed: int = 0
    ) -> Codebooks:
        """layers: (N, L, D) pooled vectors of the training tracks only."""
        layers = np.asarray(layers, dtype=np.float32)
        if layers.ndim != 3 or not np.isfinite(layers).all():
            raise ValueError(f"expected finite (N, L, D) layers, got shape {layers.shape}")
        n, n_layers, dim = layers.shape
        if n < k:
            raise ValueError(f"cannot fit k={k} centroids on {n} tracks; use more tracks or a smaller k")
        if not 1 <= groups <= dim:
            raise ValueError(f"groups must be in [1, {dim}], got {groups}")
        _check_info_shape(encoder_info, n_layers, dim)
        import sklearn  # deferred: serving only tokenizes, and scikit-learn costs ~1 s to import
        from sklearn.cluster import KMeans

        transform = ContentTransform.fit(layers)
        z = transform.apply(layers)
        centroids = []
        for layer in range(n_layers):
            for chunk in np.array_split(z[:, layer], groups, axis=1):
                km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(chunk)
                centroids.append(km.cluster_centers_.astype(np.float32))
        meta = {"k": k, "groups": groups, "seed": seed, "n_train": n, "sklearn": sklearn.__version__}
        return cls(transform, centroids, groups, dict(encoder_info), meta)

    def check_encoder(self, encoder_info: dict[str, Any]) -> None:
        """Raise CodebookMismatch unless `encoder_info` (an encoder's describe()) matches the fit-time one."""
        diffs = {
            key: (self.encoder_info.get(key), encoder_info.get(key))
            for key in IDENTITY_KEYS
            if self.encoder_info.get(key) != encoder_info.get(key)
        }
        if diffs:
            detail = "; ".join(f"{key}: fit {a!r} vs given {b!r}" for key, (a, b) in diffs.items())
            raise CodebookMismatch(f"codebooks were fit on a different encoder ({detail})")

    def standardize(self, layers: np.ndarray) -> np.ndarray:
        """The content transform (standardized, then bounded): (N, L, D) or (L, D) -> (N, L, D)."""
        return self.transform.apply(self._as_batch(layers))

    def typicality(self, layers: np.ndarray) -> np.ndarray:
        """(N,) in [0, 1]: how typical each track is of the training catalog (ContentTransform.typicality)."""
        return self.transform.typicality(self._as_batch(layers))

    def tokenize(self, layers: np.ndarray) -> np.ndarray:
        """(N, L, D) or (L, D) -> (N, L * groups) int64 ids of the nearest centroid, field-major order."""
        z = self.standardize(layers)
        tokens = np.empty((z.shape[0], self.n_fields), dtype=np.int64)
        for layer in range(self.n_layers):
            for group, chunk in enumerate(np.array_split(z[:, layer], self.groups, axis=1)):
                centers = self.centroids[layer * self.groups + group]
                dist = (chunk**2).sum(1, keepdims=True) - 2 * chunk @ centers.T + (centers**2).sum(1)
                tokens[:, layer * self.groups + group] = dist.argmin(axis=1)
        return tokens

    def embedding(self, layers: np.ndarray, layer: str | int = "last", standardize: bool = True) -> np.ndarray:
        """(N, D) dense vector: one layer ("last" or an index) or the layer mean, of the bounded transform."""
        x = self.standardize(layers) if standardize else self._as_batch(layers)
        if layer == "mean":
            return x.mean(axis=1)
        return x[:, -1 if layer == "last" else int(layer)]

    def _as_batch(self, layers: np.ndarray) -> np.ndarray:
        layers = np.asarray(layers, dtype=np.float32)
        if layers.ndim == 2:
            layers = layers[None]
        if layers.ndim != 3 or layers.shape[1:] != self.transform.shape:
            raise CodebookMismatch(f"expected (N, {self.n_layers}, {self.dim}) layers, got {layers.shape}")
        return layers

    def _validate(self) -> None:
        if len(self.transform.shape) != 2:
            raise ValueError(f"the content transform must be per layer (L, D), got {self.transform.shape}")
        self.transform.check()
        if len(self.centroids) != self.n_fields:
            raise ValueError(f"expected {self.n_fields} codebooks, found {len(self.centroids)}")
        chunk_dims = [len(c) for c in np.array_split(np.arange(self.dim), self.groups)] * self.n_layers
        for field, (centers, chunk_dim) in enumerate(zip(self.centroids, chunk_dims, strict=True)):
            if centers.shape != (self.k, chunk_dim):
                expected = (self.k, chunk_dim)
                raise ValueError(f"codebook {field} has shape {centers.shape}, expected {expected}")
        if not all(np.isfinite(c).all() for c in self.centroids):
            raise ValueError("codebooks hold non-finite centroids")
        _check_info_shape(self.encoder_info, self.n_layers, self.dim)

    def save(self, directory: str | Path) -> Path:
        """Write codebooks.safetensors + codebooks.json into `directory`, each atomically; JSON last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self.transform.tensors()
        tensors |= {f"centroids.{i}": np.ascontiguousarray(c) for i, c in enumerate(self.centroids)}
        payload = save(tensors)
        write_bytes_atomic(directory / TENSORS_FILE, payload)
        meta = {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder_info,
            "n_layers": self.n_layers,
            "dim": self.dim,
            "groups": self.groups,
            "k": self.k,
            "n_fields": self.n_fields,
            "fit": self.meta,
            "tensors_sha256": hashlib.sha256(payload).hexdigest(),
        }
        write_json_atomic(directory / META_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | Path, encoder_info: dict[str, Any] | None = None) -> Codebooks:
        """Read and verify (checksum, shapes, and the encoder when `encoder_info` is given)."""
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported codebooks format {meta.get('format_version')!r}")
        if sha256_file(directory / TENSORS_FILE) != meta["tensors_sha256"]:
            raise ValueError(f"{directory / TENSORS_FILE} does not match the checksum in {META_FILE}")
        tensors = load_file(str(directory / TENSORS_FILE))
        n_fields = meta["n_layers"] * meta["groups"]
        expected = ContentTransform.tensor_names() | {f"centroids.{i}" for i in range(n_fields)}
        if set(tensors) != expected:
            raise ValueError(f"codebooks file holds {sorted(tensors)}, expected {sorted(expected)}")
        books = cls(
            ContentTransform.from_tensors(tensors),
            [tensors[f"centroids.{i}"] for i in range(n_fields)],
            meta["groups"],
            meta["encoder"],
            meta["fit"],
        )
        if (books.n_layers, books.dim, books.k) != (meta["n_layers"], meta["dim"], meta["k"]):
            raise ValueError("codebooks tensors disagree with the shapes recorded in the metadata")
        if encoder_info is not None:
            books.check_encoder(encoder_info)
        return books


def _check_info_shape(encoder_info: dict[str, Any], n_layers: int, dim: int) -> None:
    if (encoder_info.get("n_layers"), encoder_info.get("dim")) != (n_layers, dim):
        raise CodebookMismatch(
            f"encoder info declares ({encoder_info.get('n_layers')}, {encoder_info.get('dim')}) "
            f"but the vectors are ({n_layers}, {dim})"
        )


def content_revision(encoder_revision: str, codebooks_sha256: str) -> str:
    """The `encoder_revision` stored with a track's content: model revision plus codebook version.

    The embedder (uploads) and the bootstrap (catalog) both write it, and the retriever refuses content whose
    string differs from its projection's, so the two must come from this one function.
    """
    return f"{encoder_revision}+cb.{codebooks_sha256[:12]}"
