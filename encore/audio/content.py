"""The content part of an artifact bundle: the codebooks, and how the stored dense vector is cut from the layers.

Files: `codebooks/codebooks.safetensors` + `codebooks/codebooks.json` (encore/audio/codebooks.py).
Manifest: `components.codebooks` = {"dir": "codebooks", "encoder": <encoder.describe()>} and
`components.content` = {"encoder": <backend name>, "dense_layer": "last" | "mean" | <layer index>,
"standardize": true, "catalog_tags": true (only when the catalog's tracks carry the encoder's tags)}.
The bootstrap writes it; the embedder and the bundle check read it.

Codebook versions: `version` (the first 12 hex digits of the codebooks' sha256, recorded in the manifest as
`components.codebooks.version`) names the codebooks, and every track's stored content carries it at the end of its
`encoder_revision` ("<model revision>+cb.<version>"). Tokens are only meaningful to a ranker trained with the same
codebooks: `foreign` says which stored rows name another version (the ranker serves those without audio
features, never mixed), and `python -m training.retrain --refit-codebooks` re-tokenizes every stored track before a
bundle with new codebooks becomes CURRENT (docs/events.md).

`features(layers)` is the one place the store's content fields (embedding, tokens, typicality) are computed
from an encoder's pooled layers: for the catalog (bootstrap) and for uploads (embedder) alike.
`revision(encoder_revision)` is the `encoder_revision` stored with them (encore/audio/codebooks.py).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from encore.artifacts import Bundle, BundleBuilder, BundleError
from encore.audio.codebooks import META_FILE, TENSORS_FILE, CodebookMismatch, Codebooks, content_revision
from encore.io import sha256_file

if TYPE_CHECKING:
    from encore.audio.encoder import AudioEncoder

log = logging.getLogger("encore.artifacts")

VERSION_MARK = "+cb."  # content_revision: "<model revision>+cb.<codebooks version>"


@dataclass(frozen=True)
class ContentFeatures:
    """The store's content fields of N tracks."""

    embedding: np.ndarray  # (N, w) float32: the chosen layer of the bounded content transform
    tokens: np.ndarray  # (N, L * groups) int64 codebook ids
    typicality: np.ndarray  # (N,) in [0, 1]


@dataclass(frozen=True)
class ContentComponent:
    CODEBOOKS: ClassVar[str] = "codebooks"  # the manifest component, and the codebooks' folder
    CONTENT: ClassVar[str] = "content"

    codebooks: Codebooks
    encoder: str  # the encoder backend the codebooks were fit on ("mfcc", "musicnn", ...)
    dense_layer: str | int = "last"  # "last", "mean" or a layer index (Codebooks.embedding)
    standardize: bool = True
    catalog_tags: bool = False  # the catalog's content rows carry the encoder's tags (the bootstrap's, since issue 19)
    codebooks_sha256: str = ""  # of the tensors file, as the manifest lists it (set by write and read)

    def features(self, layers: np.ndarray) -> ContentFeatures:
        """Pooled layers, (N, total) or one track's (total,) (encore/audio/layers.py) -> the store's content fields."""
        books = self.codebooks
        embedding = books.embedding(layers, layer=self.dense_layer, standardize=self.standardize)
        return ContentFeatures(embedding.astype(np.float32), books.tokenize(layers), books.typicality(layers))

    @property
    def dense_width(self) -> int:
        """The width of the stored dense vector (`features(...).embedding`)."""
        return self.codebooks.dense_width(self.dense_layer)

    @property
    def version(self) -> str:
        """The codebooks' version: what `revision` appends to every stored track's encoder revision."""
        return codebook_version(self.codebooks_sha256)

    def foreign(self, revisions: np.ndarray) -> np.ndarray:
        """(N,) bool: which stored `encoder_revision`s name other codebooks than these (their tokens and dense
        vectors mean nothing to a model trained with these)."""
        return foreign_rows(revisions, self.version)

    def revision(self, encoder_revision: str) -> str:
        """The content revision stored with every track's content (the retriever refuses any other)."""
        return content_revision(encoder_revision, self.codebooks_sha256)

    def write(self, builder: BundleBuilder) -> ContentComponent:
        """Save the codebooks into the bundle being built and record both components; returns the component
        with `codebooks_sha256` set."""
        self.codebooks.save(builder.path / self.CODEBOOKS)
        components = builder.manifest.setdefault("components", {})
        sha256 = sha256_file(builder.path / self.CODEBOOKS / TENSORS_FILE)
        components[self.CODEBOOKS] = {
            "dir": self.CODEBOOKS,
            "encoder": self.codebooks.encoder_info,
            "version": codebook_version(sha256),
        }
        components[self.CONTENT] = {
            "encoder": self.encoder,
            "dense_layer": self.dense_layer,
            "standardize": self.standardize,
            **({"catalog_tags": True} if self.catalog_tags else {}),
        }
        return replace(self, codebooks_sha256=sha256)

    @classmethod
    def read(cls, bundle: Bundle, encoder: AudioEncoder | None = None) -> ContentComponent:
        """The component of a bundle; BundleError when it is inconsistent, CodebookMismatch when `encoder` (if
        given: the embedder's) is not the one the codebooks were fit on. Without an encoder the content entry
        may be absent (a bundle with codebooks only is checked as far as it goes)."""
        books_spec, content_spec = bundle.components.get(cls.CODEBOOKS), bundle.components.get(cls.CONTENT)
        if not isinstance(books_spec, dict) or (encoder is not None and not isinstance(content_spec, dict)):
            raise BundleError(f"bundle {bundle.id} has no components.{cls.CODEBOOKS} / components.{cls.CONTENT}")
        content_spec = content_spec if isinstance(content_spec, dict) else {}
        if encoder is not None and content_spec.get("encoder") != encoder.name:
            raise BundleError(
                f"bundle {bundle.id} holds content for encoder {content_spec.get('encoder')!r}, "
                f"this embedder runs {encoder.name!r}"
            )
        folder = books_spec.get("dir")
        if not folder:
            raise BundleError(f"bundle {bundle.id}: components.codebooks.dir is missing")
        if not isinstance(folder, str) or Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise BundleError(f"bundle {bundle.id}: codebooks dir {folder!r} must be a folder inside the bundle")
        tensors = f"{folder}/{TENSORS_FILE}"
        for relative in (tensors, f"{folder}/{META_FILE}"):
            bundle.file(relative)  # raises unless listed in the manifest, hence checksummed by load_bundle
        books = _load_codebooks(bundle, folder)
        try:
            books.check_encoder(books_spec.get("encoder") or {})
        except CodebookMismatch as exc:
            message = f"bundle {bundle.id}: components.codebooks.encoder disagrees with {folder}: {exc}"
            raise BundleError(message) from None
        if encoder is not None:
            books.check_encoder(encoder.describe())
        layer = content_spec.get("dense_layer", "last")
        mean_ok = layer == "mean" and books.layout.is_uniform
        if not (layer == "last" or mean_ok or (type(layer) is int and 0 <= layer < books.n_layers)):
            message = f"dense_layer {layer!r} is not 'last', 'mean' (equal widths) or a layer index"
            raise BundleError(f"bundle {bundle.id}: {message}")
        standardize, catalog_tags = bool(content_spec.get("standardize", True)), bool(content_spec.get("catalog_tags"))
        encoder_name = str(content_spec.get("encoder", ""))
        sha256 = bundle_codebooks_sha256(bundle, folder)
        if books_spec.get("version", codebook_version(sha256)) != codebook_version(sha256):
            raise BundleError(f"bundle {bundle.id}: components.codebooks.version is not that of {tensors}")
        return cls(books, encoder_name, layer, standardize, catalog_tags, sha256)

    @classmethod
    def version_in(cls, bundle: Bundle) -> str | None:
        """The codebooks version of a (verified) bundle from its manifest alone, or None when it has no codebooks:
        what the ranker checks stored rows against without loading the codebooks."""
        books_spec = bundle.components.get(cls.CODEBOOKS)
        if not isinstance(books_spec, dict) or not isinstance(books_spec.get("dir"), str):
            return None
        return codebook_version(bundle_codebooks_sha256(bundle, books_spec["dir"]))


def codebook_version(codebooks_sha256: str) -> str:
    """The version of codebooks whose tensors file has this sha256 (encore/audio/codebooks.py content_revision)."""
    return content_revision("", codebooks_sha256).rsplit(VERSION_MARK, 1)[1]


def split_revision(encoder_revision: str) -> tuple[str, str | None]:
    """(model revision, codebooks version) of a stored `encoder_revision`; the version is None when it names none."""
    model, mark, version = str(encoder_revision).rpartition(VERSION_MARK)
    return (model, version) if mark else (str(encoder_revision), None)


def foreign_rows(revisions: np.ndarray, version: str) -> np.ndarray:
    """(N,) bool: the stored revisions that name other codebooks than `version`. A revision naming none (written by
    hand, say a benchmark's "bench") is not foreign: there is nothing to compare it with."""
    return np.fromiter((_is_foreign(r, version) for r in revisions), bool, len(revisions))


@functools.lru_cache(maxsize=1024)
def _is_foreign(revision: str, version: str) -> bool:
    # Cached: this runs per candidate per request, over a handful of distinct revisions.
    return split_revision(revision)[1] not in (None, version)


def bundle_codebooks_sha256(bundle: Bundle, folder: str) -> str:
    """The sha256 the manifest lists for the codebooks' tensors file (checked by load_bundle)."""
    sha256 = bundle.manifest.get("files", {}).get(f"{folder}/{TENSORS_FILE}")
    if not isinstance(sha256, str):
        raise BundleError(f"bundle {bundle.id}: {folder}/{TENSORS_FILE} is not listed in the manifest")
    return sha256


def _load_codebooks(bundle: Bundle, folder: str) -> Codebooks:
    try:
        return Codebooks.load(bundle.path / folder)
    except Exception as exc:  # noqa: BLE001 - its messages name host paths: logged, not returned
        log.warning("bundle %s: codebooks in %s failed to load: %s", bundle.id, folder, exc)
        raise BundleError(f"bundle {bundle.id}: the codebooks in {folder} do not load ({type(exc).__name__})") from None
