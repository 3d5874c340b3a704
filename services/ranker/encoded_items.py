"""Model inputs encoded once per track (and per user), so a request gathers rows instead of re-encoding.

Encoding 200 candidates through the spec encoder cost ~6 ms per request (pandas work per field); the item
fields of a track only change when the track table or the bundle does. `EncodedItems` holds the item-side
inputs of every TrackTable row for one (feature spec, table generation); a request gathers its candidates'
rows and encodes the user's single row (cached per user profile object), encodes the (user, track) pair fields of
its candidates (pair_inputs.py: they fit neither cache), then packs them all. The values are the
spec encoder's own output for the same frame, so the model sees bit-identical inputs (tests compare both paths).
When the cache does not cover a request (a new bundle or table generation, a freshly merged track, a
candidate the store does not know) the request takes the full encoding path and a background thread
(re)builds the cache: nothing waits for it.

With a `share_dir`, the rows encoded at a full build are written once to `share_dir/<key>/<field>.npy` and
memory-mapped, so the workers of one host hold one copy in the page cache. The key hashes the spec and the
table's contents: workers that loaded the same table map the same files; the first one encodes (under a file
lock), the others map what it wrote. Rows appended later (pushed tracks) stay in a small private block.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encore.io import atomic_path
from encore.ranker_frame import TrackFeatures, build_frame, is_item_field, is_pair_field
from encore.schema import FeatureSpec
from encore.track_table import TrackBatch, TrackTable
from services.ranker.pair_inputs import PairInputs
from services.ranker.request_inputs import RequestInputs

log = logging.getLogger("encore.ranker")

SAFE_NAME = re.compile(r"^[A-Za-z0-9_]{1,128}$")  # a field name that may become a file name
STALE_S = 600.0  # shared folders of other keys older than this are removed (workers mapped them long ago)
BUILD_CHUNK = 50_000  # rows encoded at once while building (bounds the temporary pandas frames)
USER_CACHE_SIZE = 50_000


@dataclass(frozen=True)
class EncodedItems:
    """Item-side encoded inputs of table rows [0, n_rows) for one spec (one bundle) and table generation."""

    spec: FeatureSpec  # compared by identity: FeatureSpec.hash serializes every vocabulary (ms at 1M tracks)
    generation: int
    n_rows: int
    blocks: tuple[dict[str, np.ndarray], ...]  # consecutive row ranges (item field -> encoded values), in order

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """All rows of each field as one array (a copy when rows were appended)."""
        if len(self.blocks) == 1:
            return self.blocks[0]
        return {name: np.concatenate([block[name] for block in self.blocks]) for name in self.blocks[0]}

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The encoded values of table rows `rows` (all < n_rows), per field."""
        if len(self.blocks) == 1:
            return {name: values[rows] for name, values in self.blocks[0].items()}
        sizes = [len(next(iter(block.values()))) for block in self.blocks]
        starts = np.cumsum([0, *sizes[:-1]])
        which = np.searchsorted(starts, rows, side="right") - 1
        out: dict[str, np.ndarray] = {}
        for name, first in self.blocks[0].items():
            result = np.empty((len(rows), *first.shape[1:]), first.dtype)
            for b, block in enumerate(self.blocks):
                mask = which == b
                if mask.any():
                    result[mask] = block[name][rows[mask] - starts[b]]
            out[name] = result
        return out


def table_key(spec: FeatureSpec, batch: TrackBatch) -> str:
    """A digest of the spec and of the table rows' contents: equal tables give equal keys in every worker."""
    digest = hashlib.blake2b(spec.hash.encode(), digest_size=16)
    digest.update("\x1f".join(batch.track_ids).encode())
    for name in sorted(batch.columns):
        values = batch.columns[name]
        digest.update(name.encode())
        if values.dtype == object:
            digest.update("\x1f".join(map(str, values.tolist())).encode())
        else:
            digest.update(np.ascontiguousarray(values).tobytes())
    for view in sorted(batch.present):
        digest.update(np.ascontiguousarray(batch.present[view]).tobytes())
    return digest.hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def private_dir(path: Path) -> Path | None:
    """`path` created for this user only (0700), or None when it exists but others could write into it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        log.warning("%s is not private to this user: item inputs are not shared between workers", path)
        return None
    return path


def shared_arrays(folder: Path, encode: Callable[[], dict[str, np.ndarray] | None]) -> dict[str, np.ndarray] | None:
    """The arrays stored in `folder`, memory-mapped read-only; the first caller encodes and writes them.

    Unlinking a mapped file keeps the mapping valid, so old key folders are removed once nobody new maps them.
    """
    with open(folder.parent / f".{folder.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker encodes; the others wait here, then map its files
        try:
            if not folder.is_dir():
                arrays = encode()
                if arrays is None or not all(SAFE_NAME.match(name) for name in arrays):
                    return arrays  # not shareable (or the table changed meanwhile): kept private
                with atomic_path(folder, directory=True) as tmp:
                    for name, values in arrays.items():
                        with open(tmp / f"{name}.npy", "wb") as handle:
                            np.save(handle, values, allow_pickle=False)
                _remove_stale(folder)
            # plain ndarrays over the mappings: np.memmap's subclass hooks cost time on every gather (one per field)
            return {
                p.stem: np.asarray(np.load(p, mmap_mode="r", allow_pickle=False)) for p in sorted(folder.glob("*.npy"))
            }
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale(keep: Path) -> None:
    now = time.time()
    for other in keep.parent.iterdir():
        if other != keep and other.is_dir() and now - other.stat().st_mtime > STALE_S:
            shutil.rmtree(other, ignore_errors=True)
            (other.parent / f".{other.name}.lock").unlink(missing_ok=True)


class SplitSpec:
    """A bundle's spec split into item-side, request-side (user, context) and pair (user x track) fields."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.items = FeatureSpec([f for f in spec.fields if is_item_field(f)], label=None)
        self.request = FeatureSpec([f for f in spec.fields if not (is_item_field(f) or is_pair_field(f))], label=None)
        self.request_inputs = RequestInputs(self.request)
        self.pairs = PairInputs(spec)  # encoded per request, for its candidates


def encode_item_rows(split: SplitSpec, items: TrackFeatures) -> dict[str, np.ndarray]:
    """The item fields of `items`, encoded exactly as the full path encodes them."""
    return split.items.encode(build_frame(split.items, "?", None, items))


class ItemInputCache:
    """Gathers pre-encoded item inputs for requests; (re)builds them in a background thread when stale."""

    def __init__(self, share_dir: Path | None = None):
        self.share_dir = share_dir
        self._encoded: EncodedItems | None = None
        self._split: SplitSpec | None = None
        self._users: dict[str, tuple[Mapping[str, Any] | None, dict[str, np.ndarray]]] = {}
        self._lock = threading.Lock()
        self._building = False

    @property
    def encoded(self) -> EncodedItems | None:
        return self._encoded

    def split(self, spec: FeatureSpec) -> SplitSpec:
        split = self._split
        if split is None or split.spec is not spec:
            split = self._split = SplitSpec(spec)
            self._users = {}
        return split

    def packed(
        self, spec: FeatureSpec, user_id: str, user: Mapping[str, Any] | None, items: TrackFeatures
    ) -> dict[str, np.ndarray] | None:
        """Packed model inputs from the cache, or None when it does not cover this request (then rebuilds from
        the table `items` came from)."""
        encoded = self._encoded
        rows = items.rows
        if rows is None:  # some candidate is not in the table: nothing a rebuild would change
            return None
        if (
            encoded is None
            or encoded.spec is not spec
            or encoded.generation != items.generation
            or (len(rows) and int(rows.max()) >= encoded.n_rows)
        ):
            self.build_in_background(spec, items.table)
            return None
        split = self.split(spec)
        n = len(rows)
        inputs = encoded.gather(rows)
        for name, value in self._user_inputs(split, user_id, user).items():
            inputs[name] = np.repeat(value, n, axis=0)
        inputs.update(split.pairs.encode(user_id, user, items))
        return spec.pack(inputs)

    def _user_inputs(self, split: SplitSpec, user_id: str, user: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
        hit = self._users.get(user_id)
        if hit is not None and hit[0] is user:  # the user cache hands out the same row object until it expires
            return hit[1]
        encoded = split.request_inputs.encode(user_id, user)  # what split.request's encoder gives, without pandas
        if len(self._users) >= USER_CACHE_SIZE:
            self._users.pop(next(iter(self._users)))
        self._users[user_id] = (user, encoded)
        return encoded

    def build(self, spec: FeatureSpec, table: TrackTable | None) -> EncodedItems | None:
        """Encode every row of `table` not yet covered (all of them for a new spec or generation); swap it in."""
        if table is None:
            return None
        split = SplitSpec(spec)
        previous = self._encoded
        generation = table.generation
        reuse = previous is not None and previous.spec is spec and previous.generation == generation
        start = previous.n_rows if reuse and previous is not None else 0
        stop = len(table)
        if start >= stop:
            return previous if reuse else None  # an empty table: nothing to gather from
        share_dir = private_dir(self.share_dir) if start == 0 and self.share_dir is not None else None
        if share_dir is not None:
            whole = table.slice(0, stop)
            if whole.generation != generation:
                return None
            content = table.content_key(stop)  # a persisted snapshot's name: hashing 1M rows took ~10 s
            key = table_key(spec, whole) if content is None else _digest(spec.hash, content)
            block = shared_arrays(share_dir / key, lambda: self._encode(split, table, 0, stop, generation))
        else:
            block = self._encode(split, table, start, stop, generation)
        if block is None:  # the table was reloaded meanwhile: try again later
            return None
        blocks = (*previous.blocks, block) if reuse and previous is not None else (block,)
        encoded = EncodedItems(spec, generation, stop, blocks)
        self._encoded = encoded
        log.info("item inputs encoded for rows %d..%d (generation %d)", start, stop, generation)
        return encoded

    @staticmethod
    def _encode(split: SplitSpec, table: TrackTable, start: int, stop: int, generation: int) -> dict | None:
        parts: dict[str, list[np.ndarray]] = {}
        for chunk in range(start, stop, BUILD_CHUNK):
            batch = table.slice(chunk, min(chunk + BUILD_CHUNK, stop))
            if batch.generation != generation:
                return None
            items = TrackFeatures(batch.track_ids, batch.columns, batch.present)
            for name, values in encode_item_rows(split, items).items():
                parts.setdefault(name, []).append(values)
        return {name: np.concatenate(chunks) if len(chunks) > 1 else chunks[0] for name, chunks in parts.items()}

    def build_in_background(self, spec: FeatureSpec, table: TrackTable | None) -> None:
        with self._lock:
            if self._building:
                return
            self._building = True

        def run() -> None:
            try:
                self.build(spec, table)
            except Exception:  # the full encoding path keeps serving; the next miss tries again
                log.exception("encoding item inputs failed")
            finally:
                self._building = False

        threading.Thread(target=run, name="item-input-cache", daemon=True).start()
