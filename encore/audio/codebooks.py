"""Audio tokens: per-layer (and per-group) k-means codebooks over the content transform of pooled encoder layers.

Layers may differ in width (MusiCNN: 561, 64, 64, 64, 200; encore/audio/layers.py): content is flat with the
widths beside it, and each layer is cut into `groups` blocks, one token field per block.

Fit on training-catalog tracks only, together with the bundle's ContentTransform (standardize, then bound:
encore/audio/transform.py), which the dense vector goes through as well; saved as codebooks.safetensors +
codebooks.json (no pickle), and refused when applied to vectors from another encoder, revision or shape.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save

from encore.audio.layers import LayerLayout
from encore.audio.transform import ContentTransform
from encore.errors import EncoreError
from encore.io import sha256_file, write_bytes_atomic, write_json_atomic

FORMAT_VERSION = 3  # 2: the bounded ContentTransform; 3: flat content with per-layer widths
TENSORS_FILE = "codebooks.safetensors"
META_FILE = "codebooks.json"
# describe() keys that change what the vectors mean; free-text fields (pooling, policy) are not compared.
IDENTITY_KEYS = ("backend", "revision", "sample_rate", "window_seconds", "n_layers", "dim", "layer_widths", "params")


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
        tokenized: tuple[int, ...] | None = None,
    ) -> None:
        self.transform = transform  # over one item's flat content, with its layers' widths
        # The layers that get token fields (all by default): the token ablation's "how many layers".
        self.tokenized = tuple(range(transform.layout.n_layers)) if tokenized is None else tuple(tokenized)
        self.centroids = centroids  # len(tokenized) * groups arrays, field = slot * groups + group: (k, chunk_dim)
        self.groups = groups
        self.encoder_info = encoder_info
        self.meta = meta or {}
        self._validate()

    @property
    def layout(self) -> LayerLayout:
        return self.transform.layout

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def k(self) -> int:
        return int(self.centroids[0].shape[0])

    @property
    def n_fields(self) -> int:
        return len(self.tokenized) * self.groups

    @classmethod
    def fit(
        cls,
        layers: np.ndarray,
        *,
        encoder_info: dict[str, Any],
        k: int = 32,
        groups: int = 1,
        seed: int = 0,
        tokenize_layers: str | Sequence[int] = "all",
    ) -> Codebooks:
        """layers: the pooled layers of the training tracks only, (N, total) flat (or a uniform (N, L, D)),
        cut by the widths `encoder_info` declares. `tokenize_layers` picks the layers that get token fields
        (`select_layers`: "all", "lastN" or indices); the content transform always covers every layer."""
        layout = LayerLayout.of(encoder_info)
        tokenized = select_layers(tokenize_layers, layout.n_layers)
        try:
            layers = layout.flatten(layers)
        except ValueError as exc:
            raise CodebookMismatch(f"the layers do not fit the encoder info: {exc}") from exc
        if not np.isfinite(layers).all():
            raise ValueError("layers hold non-finite values")
        n = len(layers)
        if n < k:
            raise ValueError(f"cannot fit k={k} centroids on {n} tracks; use more tracks or a smaller k")
        narrowest = min(layout.widths[i] for i in tokenized)
        if not 1 <= groups <= narrowest:
            raise ValueError(f"groups must be in [1, {narrowest}] (the narrowest tokenized layer), got {groups}")
        import sklearn  # deferred: serving only tokenizes, and scikit-learn costs ~1 s to import
        from sklearn.cluster import KMeans

        transform = ContentTransform.fit(layers, layout.widths)
        z = transform.apply(layers)
        centroids = []
        for index in tokenized:
            for chunk in np.array_split(layout.layer(z, index), groups, axis=1):
                km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(chunk)
                centroids.append(km.cluster_centers_.astype(np.float32))
        meta = {"k": k, "groups": groups, "seed": seed, "n_train": n, "sklearn": sklearn.__version__}
        return cls(transform, centroids, groups, dict(encoder_info), meta, tokenized)

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
        """The content transform (standardized, then bounded): layers in any form flatten() takes -> (N, total)."""
        return self.transform.apply(self._as_batch(layers))

    def typicality(self, layers: np.ndarray) -> np.ndarray:
        """(N,) in [0, 1]: how typical each track is of the training catalog (ContentTransform.typicality)."""
        return self.transform.typicality(self._as_batch(layers))

    def tokenize(self, layers: np.ndarray) -> np.ndarray:
        """Layers (any form flatten() takes) -> (N, len(tokenized) * groups) int64 ids of the nearest centroid,
        field-major over the tokenized layers."""
        z = self.standardize(layers)
        tokens = np.empty((z.shape[0], self.n_fields), dtype=np.int64)
        for slot, index in enumerate(self.tokenized):
            values = self.layout.layer(z, index)
            for group, chunk in enumerate(np.array_split(values, self.groups, axis=1)):
                centers = self.centroids[slot * self.groups + group]
                dist = (chunk**2).sum(1, keepdims=True) - 2 * chunk @ centers.T + (centers**2).sum(1)
                tokens[:, slot * self.groups + group] = dist.argmin(axis=1)
        return tokens

    def embedding(self, layers: np.ndarray, layer: str | int = "last", standardize: bool = True) -> np.ndarray:
        """(N, w) dense vector of the bounded transform: one layer ("last" or an index), or the layer mean
        (equal widths only)."""
        x = self.standardize(layers) if standardize else self._as_batch(layers)
        if layer == "mean":
            if not self.layout.is_uniform:
                raise CodebookMismatch(f"no layer mean over layers of widths {list(self.layout.widths)}")
            return np.mean(self.layout.split(x), axis=0)
        return self.layout.layer(x, -1 if layer == "last" else int(layer))

    def dense_width(self, layer: str | int = "last") -> int:
        """The width of embedding(layer=...)'s vector."""
        return self.layout.widths[-1 if layer in ("last", "mean") else self.layout.index(int(layer))]

    def _as_batch(self, layers: np.ndarray) -> np.ndarray:
        try:
            return self.layout.flatten(layers)
        except ValueError as exc:
            raise CodebookMismatch(str(exc)) from exc

    def _validate(self) -> None:
        self.transform.check()
        if len(self.centroids) != self.n_fields:
            raise ValueError(f"expected {self.n_fields} codebooks, found {len(self.centroids)}")
        if not self.tokenized or sorted(set(self.tokenized)) != list(self.tokenized):
            raise ValueError(f"tokenized layers must be distinct and ascending, got {list(self.tokenized)}")
        if self.tokenized[0] < 0 or self.tokenized[-1] >= self.n_layers:
            raise ValueError(f"tokenized layers {list(self.tokenized)} out of range for {self.n_layers} layers")
        widths = [self.layout.widths[i] for i in self.tokenized]
        chunk_dims = [len(c) for w in widths for c in np.array_split(np.arange(w), self.groups)]
        for field, (centers, chunk_dim) in enumerate(zip(self.centroids, chunk_dims, strict=True)):
            if centers.shape != (self.k, chunk_dim):
                expected = (self.k, chunk_dim)
                raise ValueError(f"codebook {field} has shape {centers.shape}, expected {expected}")
        if not all(np.isfinite(c).all() for c in self.centroids):
            raise ValueError("codebooks hold non-finite centroids")
        _check_info_shape(self.encoder_info, self.layout)

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
            "layer_widths": list(self.layout.widths),
            "tokenized_layers": list(self.tokenized),
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
        # Files written before layers could be chosen tokenized every layer.
        tokenized = tuple(meta.get("tokenized_layers", range(meta["n_layers"])))
        n_fields = len(tokenized) * meta["groups"]
        expected = ContentTransform.tensor_names() | {f"centroids.{i}" for i in range(n_fields)}
        if set(tensors) != expected:
            raise ValueError(f"codebooks file holds {sorted(tensors)}, expected {sorted(expected)}")
        books = cls(
            ContentTransform.from_tensors(tensors),
            [tensors[f"centroids.{i}"] for i in range(n_fields)],
            meta["groups"],
            meta["encoder"],
            meta["fit"],
            tokenized,
        )
        if (list(books.layout.widths), books.k) != (meta["layer_widths"], meta["k"]):
            raise ValueError("codebooks tensors disagree with the shapes recorded in the metadata")
        if encoder_info is not None:
            books.check_encoder(encoder_info)
        return books


def select_layers(spec: str | Sequence[int], n_layers: int) -> tuple[int, ...]:
    """The layers to tokenize, ascending: "all"; "lastN" (the N deepest, e.g. "last1", "last3"); or indices
    ("0,2,-1" or a sequence; negative counts from the end). Anything else, or an empty or out-of-range pick,
    raises ValueError."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "all":
            return tuple(range(n_layers))
        if text.startswith("last") and text[4:].isdigit():
            count = int(text[4:])
            if not 1 <= count <= n_layers:
                raise ValueError(f"{spec!r}: the encoder has {n_layers} layer(s)")
            return tuple(range(n_layers - count, n_layers))
        try:
            spec = [int(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise ValueError(f"tokenized layers {spec!r}: use all, lastN or comma-separated indices") from exc
    spec = [int(i) for i in spec]
    picked = sorted({i % n_layers for i in spec if -n_layers <= i < n_layers})
    if not picked or len(picked) != len(spec):
        raise ValueError(f"tokenized layers {list(spec)}: each must be a distinct index in [-{n_layers}, {n_layers})")
    return tuple(picked)


def _check_info_shape(encoder_info: dict[str, Any], layout: LayerLayout) -> None:
    declared = LayerLayout.of(encoder_info)
    if declared != layout:
        raise CodebookMismatch(
            f"encoder info declares layers {list(declared.widths)} but the vectors have {list(layout.widths)}"
        )


def content_revision(encoder_revision: str, codebooks_sha256: str) -> str:
    """The `encoder_revision` stored with a track's content: model revision plus codebook version.

    The embedder (uploads) and the bootstrap (catalog) both write it, and the retriever refuses content whose
    string differs from its projection's, so the two must come from this one function.
    """
    return f"{encoder_revision}+cb.{codebooks_sha256[:12]}"
