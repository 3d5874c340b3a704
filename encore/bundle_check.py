"""Bundle confinement and the whole-bundle checks every service runs before it swaps a bundle in.

`read_confined_manifest` makes sure a bundle folder can only hand a service the files its manifest lists:
no symlinks, no paths leaving the folder, no unlisted files, sizes before checksums. `check_contents` then
opens every listed file the way a service would (JSON parses, arrays load without pickle, ONNX graphs load
in ONNX Runtime and read external data only from listed files), so the ranker, retriever and embedder
accept or refuse a bundle alike. Messages name bundle-relative paths only, never a host path: a library's
own message (which may) goes to the log, and refusals are raised `from None`, so that no error mapper takes
them for a library's message and hides them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from encore.errors import EncoreError
from encore.onnx_external import OnnxParseError, external_data_locations

if TYPE_CHECKING:
    from encore.artifacts import Bundle

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: "sizes" and "manifest_version" recorded; version 1 bundles are refused (rebuild them)
BUNDLE_KIND = "encore-bundle"
ONNX_EXTERNAL_DATA = ".data"  # raw tensor bytes, allowed only where a listed .onnx graph names the file
SAFE_SUFFIXES = {".onnx", ".npy", ".npz", ".json", ".parquet", ".safetensors", ONNX_EXTERNAL_DATA}
BUNDLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_MANIFEST_BYTES = 16 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Top-level manifest fields: name -> (required, type). Anything else is refused.
MANIFEST_FIELDS: dict[str, tuple[bool, type]] = {
    "manifest_version": (True, int),
    "kind": (True, str),
    "bundle_id": (True, str),
    "created": (True, str),
    "files": (True, dict),
    "sizes": (True, dict),
    "components": (False, dict),
    "feature_spec_hash": (False, str),
    "dataset": (False, dict),
    "training": (False, dict),  # how a run was launched: world_size, backend, batch_size_per_rank
}
# Components and their path-valued keys: "file" must be a listed file, "folder" must hold listed files.
COMPONENT_PATHS: dict[str, dict[str, str]] = {
    "ranker": {"onnx": "file", "onnx_int8": "file", "spec": "file", "popularity": "file", "cold_calibration": "file"},
    "retriever": {"path": "folder"},
    "codebooks": {"dir": "folder"},
    "content": {},
}

log = logging.getLogger("encore.artifacts")


class BundleError(EncoreError):
    """A bundle is missing, incomplete, tampered with, or made for another feature spec."""


def missing_or_mismatched(bundle_id: str, relative: str) -> BundleError:
    """One message for a listed file that is absent, of another size or another checksum: it never tells
    which, so a manifest cannot be used to probe what exists."""
    return BundleError(f"bundle {bundle_id}: file {relative} is missing or does not match the manifest")


# --- the manifest's shape ---------------------------------------------------------------------------------


def check_manifest_fields(manifest: Any, name: str) -> None:
    """Version, kind, known fields of the right types, known components, clean listed paths with sizes."""
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise BundleError(f"bundle {name}: {MANIFEST} is not an Encore bundle manifest")
    version = manifest.get("manifest_version", 1)
    if version != MANIFEST_VERSION:
        raise BundleError(
            f"bundle {name}: manifest version {version!r}, this Encore reads version {MANIFEST_VERSION} "
            "(rebuild the bundle, e.g. python -m training.bootstrap --force)"
        )
    unknown = sorted(set(manifest) - set(MANIFEST_FIELDS))
    if unknown:
        raise BundleError(f"bundle {name}: unknown manifest field(s) {[f[:40] for f in unknown[:5]]}")
    for field, (required, kind) in MANIFEST_FIELDS.items():
        if (required and field not in manifest) or (field in manifest and type(manifest[field]) is not kind):
            raise BundleError(f"bundle {name}: manifest field {field!r} must be a {kind.__name__}")
    unknown = sorted(set(manifest.get("components", {})) - set(COMPONENT_PATHS))
    if unknown:
        shown = [c[:40] for c in unknown[:5]]
        raise BundleError(f"bundle {name}: unknown component(s) {shown}; known: {sorted(COMPONENT_PATHS)}")
    if not all(isinstance(c, dict) for c in manifest.get("components", {}).values()):
        raise BundleError(f"bundle {name}: every component must be an object")
    files, sizes = manifest["files"], manifest["sizes"]
    if set(files) != set(sizes):
        raise BundleError(f"bundle {name}: manifest 'files' and 'sizes' list different paths")
    for relative, digest in files.items():
        check_relative_path(relative, name)
        size = sizes[relative]
        if not (isinstance(digest, str) and _SHA256.match(digest)) or type(size) is not int or size < 0:
            raise BundleError(f"bundle {name}: {relative} needs a sha256 and a size in the manifest")


def check_relative_path(relative: Any, name: str) -> None:
    """A listed path is plain, relative, normalized, inside the folder, and of a safe format."""
    pure = PurePosixPath(relative) if isinstance(relative, str) else None
    if (
        pure is None
        or not relative
        or "\\" in relative
        or "\0" in relative
        or pure.is_absolute()
        or pure.as_posix() != relative
        or any(part in ("..", ".", "") for part in relative.split("/"))
    ):
        raise BundleError(f"bundle {name}: listed path {str(relative)[:80]!r} is not a plain path inside the bundle")
    if relative == MANIFEST or pure.suffix not in SAFE_SUFFIXES:
        raise BundleError(f"bundle {name}: {relative} is not an allowed bundle file ({sorted(SAFE_SUFFIXES)})")


# --- the folder on disk -----------------------------------------------------------------------------------


def read_confined_manifest(path: Path) -> dict:
    """The manifest of the bundle folder `path`, after every structural check (not yet the checksums)."""
    name = path.name
    if not _is_plain(path, stat.S_ISDIR):
        raise BundleError(f"bundle {name!r} is missing or is not a plain folder")
    manifest_path = path / MANIFEST
    if not _is_plain(manifest_path, stat.S_ISREG) or manifest_path.lstat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"bundle {name}: {MANIFEST} is missing or is not a plain file")
    try:
        manifest = json.loads(_read_nofollow(manifest_path))
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        log.warning("bundle %s: %s does not parse: %s", name, MANIFEST, exc)
        raise BundleError(f"bundle {name}: {MANIFEST} is not valid JSON") from None
    check_manifest_fields(manifest, name)
    if manifest["bundle_id"] != name:
        raise BundleError(f"bundle {name}: the manifest names bundle {manifest['bundle_id'][:130]!r}")
    on_disk = walk_plain_files(path, name)
    unlisted = sorted(on_disk - set(manifest["files"]))
    if unlisted:
        raise BundleError(f"bundle {name}: {unlisted[0]} is in the folder but not in the manifest")
    for relative in sorted(manifest["files"]):  # sizes first: a wrong size is refused before any hashing
        if relative not in on_disk or (path / relative).lstat().st_size != manifest["sizes"][relative]:
            raise missing_or_mismatched(name, relative)
    return manifest


def walk_plain_files(path: Path, name: str) -> set[str]:
    """Relative paths of every file under `path` (manifest excluded); a symlink or special file is refused."""
    found: set[str] = set()

    def unreadable(error: OSError) -> None:  # os.walk would skip the folder, and the files it hides
        raise BundleError(f"bundle {name}: a folder inside the bundle cannot be read") from None

    for folder, dirs, files in os.walk(path, onerror=unreadable, followlinks=False):
        for entry in [*dirs, *files]:
            full = Path(folder, entry)
            relative = full.relative_to(path).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(f"bundle {name}: {relative} is a symlink; bundles hold plain files only")
            if entry in files and not stat.S_ISREG(mode):
                raise BundleError(f"bundle {name}: {relative} is not a plain file")
            if entry in files and relative != MANIFEST:
                found.add(relative)
    return found


def verify_checksums(path: Path, manifest: dict) -> None:
    for relative, digest in sorted(manifest["files"].items()):
        try:
            same = sha256_nofollow(path / relative) == digest
        except OSError:  # gone or swapped for a symlink since the walk
            raise missing_or_mismatched(manifest["bundle_id"], relative) from None
        if not same:
            raise missing_or_mismatched(manifest["bundle_id"], relative)


def sha256_nofollow(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file opened without following a symlink (one swapped in after the walk is refused)."""
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_nofollow(path: Path) -> bytes:
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
        return fh.read(MAX_MANIFEST_BYTES + 1)


def _is_plain(path: Path, is_kind: Callable[[int], bool]) -> bool:
    try:
        return is_kind(path.lstat().st_mode)  # lstat: a symlink is never a plain file or folder
    except OSError:
        return False


# --- the contents, opened as a service opens them ---------------------------------------------------------


def check_contents(bundle: Bundle) -> None:
    """Open every listed file by its format and check each component; the same in every service."""
    onnx_files = sorted(r for r in bundle.manifest["files"] if r.endswith(".onnx"))
    external = {data for relative in onnx_files for data in _onnx_external_files(bundle, relative)}
    opened: dict[str, Any] = {}  # relative path -> what its opener returned (ONNX sessions, reused below)
    for relative in sorted(bundle.manifest["files"]):
        suffix = PurePosixPath(relative).suffix
        if suffix == ONNX_EXTERNAL_DATA and relative not in external:
            raise BundleError(f"bundle {bundle.id}: {relative} is not the external data of a listed ONNX graph")
        if suffix in _OPENERS:
            opened[relative] = _open_as(bundle, relative, _OPENERS[suffix])
    for name, component in bundle.components.items():
        _check_component_paths(bundle, name, component)
    if "ranker" in bundle.components:
        _check_ranker(bundle, bundle.components["ranker"], opened)
    if "retriever" in bundle.components:
        _check_retriever(bundle, bundle.components["retriever"])
    if "codebooks" in bundle.components:
        _check_codebooks(bundle)


def _onnx_external_files(bundle: Bundle, relative: str) -> set[str]:
    """The bundle files an ONNX graph reads its external tensors from; each must be listed."""
    try:
        locations = external_data_locations(bundle.file(relative).read_bytes())
    except OnnxParseError as exc:
        raise BundleError(f"bundle {bundle.id}: {relative} is not a valid ONNX model ({exc})") from None
    found = set()
    for location in locations:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(relative), location))
        if "\\" in location or posixpath.isabs(location) or target not in bundle.manifest["files"]:
            raise BundleError(f"bundle {bundle.id}: {relative} reads external data {location[:80]!r}, not listed")
        found.add(target)
    return found


def _load_json(path: Path) -> None:
    json.loads(path.read_bytes())


def _load_npy(path: Path) -> None:
    np.load(path, mmap_mode="r", allow_pickle=False)


def _load_npz(path: Path) -> None:
    with np.load(path, allow_pickle=False) as arrays:
        for key in arrays.files:
            arrays[key]


def _load_onnx(path: Path) -> Any:
    return _onnx_session(path)


def _load_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as tensors:
        for key in tensors.keys():  # noqa: SIM118 - safe_open has no __iter__
            tensors.get_tensor(key)


def _load_parquet(path: Path) -> None:
    import pyarrow.parquet as pq

    pq.read_metadata(path)


_OPENERS: dict[str, Callable[[Path], Any]] = {
    ".json": _load_json,
    ".npy": _load_npy,
    ".npz": _load_npz,
    ".onnx": _load_onnx,
    ".safetensors": _load_safetensors,
    ".parquet": _load_parquet,
}


def _open_as(bundle: Bundle, relative: str, opener: Callable[[Path], Any]) -> Any:
    """Run `opener`; a library's own message (it may name host paths) goes to the log, not the refusal."""
    try:
        return opener(bundle.file(relative))
    except Exception as exc:  # noqa: BLE001 - any failure to open a listed file refuses the bundle
        log.warning("bundle %s: %s failed to load: %s: %s", bundle.id, relative, type(exc).__name__, exc)
        kind = PurePosixPath(relative).suffix.lstrip(".")
        raise BundleError(f"bundle {bundle.id}: {relative} does not load as {kind} ({type(exc).__name__})") from None


def _check_component_paths(bundle: Bundle, name: str, component: dict) -> None:
    for key, kind in COMPONENT_PATHS[name].items():
        if key not in component:
            continue
        value = component[key]
        check_relative_path(value, bundle.id) if kind == "file" else _check_folder(value, bundle.id)
        listed = bundle.manifest["files"]
        if (kind == "file" and value not in listed) or (
            kind == "folder" and not any(r.startswith(f"{value}/") for r in listed)
        ):
            raise BundleError(f"bundle {bundle.id}: components.{name}.{key} names {value!r}, not a listed {kind}")


def _check_folder(value: Any, name: str) -> None:
    if not isinstance(value, str) or PurePosixPath(value).suffix:
        raise BundleError(f"bundle {name}: folder {str(value)[:80]!r} is not a plain path inside the bundle")
    check_relative_path(f"{value}/x.json", name)


def _check_ranker(bundle: Bundle, component: dict, opened: dict[str, Any]) -> None:
    """The spec matches the manifest's hash and each graph (fp32, int8 if any) scores two rows of zeros to finite
    numbers."""
    from encore.schema import FeatureSpec

    for key in ("model", "onnx", "spec"):
        if not component.get(key):
            raise BundleError(f"bundle {bundle.id}: components.ranker.{key} is missing")
    graphs = {key: component[key] for key in ("onnx", "onnx_int8") if component.get(key)}  # fp32, int8 if any
    for key, graph in graphs.items():
        if not str(graph).endswith(".onnx"):
            raise BundleError(f"bundle {bundle.id}: components.ranker.{key} must name an .onnx file")
    try:
        spec = FeatureSpec.load(bundle.file(component["spec"]))
    except Exception as exc:  # noqa: BLE001 - SpecError, KeyError, TypeError: all a spec that cannot be read
        log.warning("bundle %s: %s does not load as a spec: %s", bundle.id, component["spec"], exc)
        raise BundleError(f"bundle {bundle.id}: {component['spec']} is not a feature spec") from None
    if spec.hash != bundle.manifest.get("feature_spec_hash"):
        raise BundleError(f"bundle {bundle.id}: {component['spec']} does not match the manifest's feature_spec_hash")
    for graph in graphs.values():
        session = opened[graph]  # listed and .onnx (checked above), so already loaded
        if sorted(i.name for i in session.get_inputs()) != sorted(spec.input_names()):
            raise BundleError(f"bundle {bundle.id}: {graph} does not take the inputs its spec packs")
        try:
            scores = session.run(None, {i.name: _zeros(i) for i in session.get_inputs()})[0]
        except Exception as exc:  # noqa: BLE001 - any runtime failure refuses the graph
            log.warning("bundle %s: %s failed on zeros: %s", bundle.id, graph, exc)
            scores = None
        if scores is None or np.shape(scores) != (2,) or not np.isfinite(scores).all():
            raise BundleError(f"bundle {bundle.id}: {graph} does not score two rows to finite numbers")


def _check_retriever(bundle: Bundle, component: dict) -> None:
    """The user and item vectors match the counts and width the manifest entry gives, as finite float32."""
    from encore.retriever_bundle import RetrieverComponent

    folder = component.get("path")
    counts = {"user": component.get("n_users"), "item": component.get("n_items")}
    for side, count in counts.items():
        relative = f"{folder}/{RetrieverComponent.VECTORS[side]}"
        if relative not in bundle.manifest["files"]:
            raise BundleError(f"bundle {bundle.id}: the retriever has no {relative}")
        vectors = np.load(bundle.file(relative), mmap_mode="r", allow_pickle=False)
        if vectors.shape != (count, component.get("dim")) or vectors.dtype != np.float32:
            raise BundleError(
                f"bundle {bundle.id}: {relative} is {vectors.dtype}{list(vectors.shape)}, the manifest says "
                f"float32[{count}, {component.get('dim')}]"
            )
        if not all(np.isfinite(vectors[i : i + 65536]).all() for i in range(0, len(vectors), 65536)):
            raise BundleError(f"bundle {bundle.id}: {relative} holds NaN or infinite values")


def _check_codebooks(bundle: Bundle) -> None:
    """The codebooks load, match the encoder the manifest names, and hold the layer the content entry picks."""
    from encore.audio.content import ContentComponent

    ContentComponent.read(bundle)


def _onnx_session(path: Path) -> Any:
    from encore.onnx_scorer import onnx_session

    return onnx_session(path, threads=1, device="cpu")


def _zeros(graph_input: Any) -> np.ndarray:
    """Two rows of zeros (id 0 is padding/OOV in every spec) for one ONNX input; dynamic dims become 2."""
    shape = [d if isinstance(d, int) else 2 for d in graph_input.shape]
    dtype = np.int64 if "int64" in graph_input.type else np.float32
    return np.zeros(shape, dtype=dtype)
