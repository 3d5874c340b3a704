"""Artifact bundles: everything serving needs from one training run, in one verified folder.

`artifacts/<bundle-id>/manifest.json` lists every file with its sha256 and size plus the feature-spec hash;
`artifacts/CURRENT` names the bundle services load. Bundles are built in a hidden temp folder and renamed
into place, so a reader never sees half a bundle. Loading confines a bundle to the files it lists and opens
each of them (encore.bundle_check), the same in every service. Services hold the loaded state in a
`BundleHolder`, which swaps it atomically on reload and keeps the old state when a new bundle is refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from encore.bundle_check import (
    BUNDLE_ID,
    BUNDLE_KIND,
    MANIFEST,
    MANIFEST_VERSION,
    SAFE_SUFFIXES,
    BundleError,
    check_contents,
    check_manifest_fields,
    read_confined_manifest,
    verify_checksums,
)
from encore.errors import EncoreError
from encore.io import sha256_file, write_json_atomic, write_text_atomic

CURRENT = "CURRENT"
__all__ = [
    "BUNDLE_KIND",
    "CURRENT",
    "MANIFEST",
    "MANIFEST_VERSION",
    "SAFE_SUFFIXES",
    "Bundle",
    "BundleBuilder",
    "BundleError",
    "BundleHolder",
    "current_bundle_path",
    "load_bundle",
    "set_current",
]

log = logging.getLogger("encore.artifacts")


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its folder and manifest."""

    path: Path
    manifest: dict

    @property
    def id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def components(self) -> dict:
        return self.manifest.get("components", {})

    def file(self, relative: str) -> Path:
        if relative not in self.manifest["files"]:
            raise BundleError(f"bundle {self.id} has no file {relative!r}")
        return self.path / relative


class BundleBuilder:
    """Write files under `.path`, fill `.manifest`, and the bundle appears only when the block succeeds.

    with BundleBuilder(root, "demo-001") as b:
        (b.path / "ranker").mkdir(); ...
        b.manifest["components"] = {...}
    """

    def __init__(self, root: str | Path, bundle_id: str, make_current: bool = True):
        if not BUNDLE_ID.fullmatch(bundle_id):
            raise BundleError(f"bad bundle id {bundle_id!r}: letters, digits, '.', '_' and '-' only")
        self.root, self.bundle_id, self.make_current = Path(root), bundle_id, make_current
        self.manifest: dict = {}
        self.path = Path()

    def __enter__(self) -> BundleBuilder:
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{self.bundle_id}."))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            files, sizes = {}, {}
            for p in sorted(self.path.rglob("*")):
                relative = p.relative_to(self.path).as_posix()
                if p.is_symlink():
                    raise BundleError(f"{relative}: a bundle holds plain files, not symlinks")
                if p.is_file():
                    if p.suffix not in SAFE_SUFFIXES:
                        raise BundleError(f"{p.name}: only {sorted(SAFE_SUFFIXES)} files may go in a bundle")
                    files[relative], sizes[relative] = sha256_file(p), p.stat().st_size
            doc = {
                **self.manifest,
                "manifest_version": MANIFEST_VERSION,
                "kind": BUNDLE_KIND,
                "bundle_id": self.bundle_id,
                "created": datetime.now(UTC).isoformat(),
                "files": files,
                "sizes": sizes,
            }
            check_manifest_fields(doc, self.bundle_id)  # a writer never publishes what loaders refuse
            write_json_atomic(self.path / MANIFEST, doc)
            final = self.root / self.bundle_id
            if final.exists():
                shutil.rmtree(final)
            os.chmod(self.path, 0o755)  # mkdtemp makes 0700; services may run as another user
            self.path.rename(final)
            self.path = final
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        if self.make_current:
            set_current(self.root, self.bundle_id)


def load_bundle(path: str | Path, expect_spec_hash: str | None = None) -> Bundle:
    """Read, confine and verify a bundle; raise BundleError unless every service could serve it.

    Structure first (no symlinks, only listed files, the folder named by the manifest's bundle_id, sizes),
    then checksums and the expected spec hash, then every file opened by its format and each component
    checked (bundle_check).
    """
    path = Path(path)
    manifest = read_confined_manifest(path)
    verify_checksums(path, manifest)
    bundle = Bundle(path, manifest)
    if expect_spec_hash is not None and manifest.get("feature_spec_hash") != expect_spec_hash:
        raise BundleError(
            f"bundle {bundle.id} was built for feature spec {manifest.get('feature_spec_hash')}, "
            f"expected {expect_spec_hash}"
        )
    check_contents(bundle)
    return bundle


def set_current(root: str | Path, bundle_id: str) -> None:
    write_text_atomic(Path(root) / CURRENT, bundle_id + "\n")


def current_bundle_path(root: str | Path) -> Path:
    """The folder `root/CURRENT` points at; the bundle id never becomes a path outside `root`."""
    pointer = Path(root) / CURRENT
    try:
        with os.fdopen(os.open(pointer, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
            bundle_id = fh.read(256).decode("utf-8", "replace").strip()
    except OSError:  # missing, a symlink (ELOOP) or unreadable: no bundle to load
        raise BundleError(f"no current bundle: {CURRENT} is missing or not a plain file (run the bootstrap)") from None
    if not BUNDLE_ID.fullmatch(bundle_id):
        raise BundleError(f"{CURRENT} holds a bad bundle id {bundle_id[:40]!r}")
    return Path(root) / bundle_id


T = TypeVar("T")


class BundleHolder(Generic[T]):
    """The state a service built from its bundle; `reload` builds the new state fully, then swaps it in.

    Readers take `holder.state` once per request and use that object throughout, so a swap in the middle
    of a request never mixes two bundles.
    """

    def __init__(self, build: Callable[[Bundle], T], expect_spec_hash: str | None = None):
        self._build = build
        self._expect = expect_spec_hash
        self._loaded: tuple[Bundle, T] | None = None  # replaced as one reference, never mutated
        self._lock = threading.Lock()

    @property
    def state(self) -> T:
        if self._loaded is None:
            raise BundleError("no bundle loaded")
        return self._loaded[1]

    @property
    def bundle(self) -> Bundle | None:
        return self._loaded[0] if self._loaded else None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def reload(self, path: str | Path) -> Bundle:
        """Load and verify `path`; on any error raise BundleError and keep serving the old state."""
        with self._lock:
            try:
                bundle = load_bundle(path, self._expect)
                state = self._build(bundle)
            except BundleError:
                raise
            except Exception as exc:  # a broken file inside a verified bundle is still a refused bundle
                raise BundleError(_refusal(Path(path), exc)) from exc
            self._loaded = (bundle, state)
            return bundle


def _refusal(path: Path, exc: Exception) -> str:
    """Our own errors keep their message (host paths replaced by the bundle's name); a library's message
    may name host paths or internals, so it goes to the log and the refusal names its type only."""
    name = path.name
    if isinstance(exc, EncoreError):
        return f"bundle {name}: " + str(exc).replace(str(path.resolve()), name).replace(str(path), name)
    log.warning("bundle %s could not be loaded: %s: %s", name, type(exc).__name__, exc)
    return f"bundle {name} could not be loaded ({type(exc).__name__})"
