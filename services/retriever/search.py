"""The retriever's logic, callable without HTTP: recall vectors from a bundle, top-k search, cold tracks.

- `RecallIndex.from_bundle` reads and checks `<bundle>/retriever/` (written by training/train_recall.py for
  any recall model: BPR, VBPR, FREEDOM, LGMRec; the manifest names it and it becomes the candidates' source).
- `RecallIndex.candidates`: known user -> dot product with every item (trained and cold), played items
  masked, top-k by `argpartition` (exact), or through a faiss IVF index for large catalogs (`SearchOptions`);
  unknown user -> the bundle's most played items.
- Cold tracks (uploads, or tracks pushed to the store after the bundle was built) get an item vector from
  their content vector through the bundle's content-to-item map (a linear map for every model, see
  train_recall's docstring), so they compete with trained items by the same score (always scored exactly).
- `Retriever` keeps the index (in a BundleHolder) and the cold catalogue in step: readers never lock and
  never see a half-built state; writers build a new immutable `ColdItems` and swap one reference.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from encore import feature_names as fn
from encore.artifacts import Bundle, BundleError, BundleHolder
from encore.errors import EncoreError
from encore.store import Store

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)

COMPONENT = "retriever"
FORMAT_VERSION = 1
STORE_READ_CHUNK = 500
FOLDIN_SOURCE = "foldin"  # candidates of a listener unknown to the bundle, from their played tracks' vectors


class ColdItemRefused(EncoreError):
    """A new track's content cannot be projected with this bundle (wrong encoder or length, no projection)."""


# --- Bundle contents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """item vector = ((content - mean) / std) @ weight + bias, the formula training fit (same arrays)."""

    weight: np.ndarray  # (C, D)
    bias: np.ndarray  # (D,)
    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)
    encoder: dict[str, str]  # {"encoder", "encoder_revision"} the content must come from

    @property
    def content_dim(self) -> int:
        return len(self.mean)

    def apply(self, content: np.ndarray) -> np.ndarray:
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
class ColdItems:
    """Tracks added after the bundle was built, with their projected vectors; replaced whole, never mutated."""

    ids: tuple[str, ...]
    index: dict[str, int]
    vectors: np.ndarray  # (n, D) float32

    @classmethod
    def empty(cls, dim: int) -> ColdItems:
        return cls((), {}, np.zeros((0, dim), np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def with_item(self, track_id: str, vector: np.ndarray) -> ColdItems:
        """A copy with the track's vector added or replaced."""
        if track_id in self.index:
            vectors = self.vectors.copy()
            vectors[self.index[track_id]] = vector
            return ColdItems(self.ids, self.index, vectors)
        return ColdItems(
            (*self.ids, track_id), {**self.index, track_id: len(self.ids)}, np.vstack([self.vectors, vector[None]])
        )


@dataclass(frozen=True)
class Candidate:
    track_id: str
    score: float
    cold: bool


@dataclass(frozen=True)
class CandidateList:
    user_id: str
    known_user: bool
    source: str  # the bundle's model in lower case ("bpr", "vbpr", "freedom", "lgmrec") or "popularity"
    bundle_id: str
    candidates: list[Candidate]


@dataclass(frozen=True)
class SearchOptions:
    """How known users' top-k is found. exact: every item scored (numpy); ivf: faiss IVF-flat inner-product
    index (approximate); auto: ivf from `ivf_min_items` items on. `model`: refuse bundles of another model."""

    index: Literal["exact", "ivf", "auto"] = "auto"
    ivf_min_items: int = 1_000_000
    ivf_nlist: int = 0  # IVF cells; 0: 4 * sqrt(n_items)
    ivf_nprobe: int = 32  # cells visited per query: the recall / speed knob (see docs/performance.md)
    # At load, nprobe is doubled from ivf_nprobe until sampled users' recall@ivf_check_k against exact search
    # reaches this (0: no check). How well IVF does depends on how clustered the vectors are: measure, not hope.
    ivf_target_recall: float = 0.95
    ivf_check_k: int = 200
    ivf_check_users: int = 64
    model: str = ""  # e.g. "FREEDOM"; empty: serve whichever model the bundle holds
    cold_share: float = 0.3  # of each known user's k, at least this share goes to tracks added since the bundle

    def use_ivf(self, n_items: int) -> bool:
        return self.index == "ivf" or (self.index == "auto" and n_items >= self.ivf_min_items)


def build_ivf(vectors: np.ndarray, nlist: int, nprobe: int, seed: int = 0) -> faiss.Index:
    """A faiss IVF-flat inner-product index over `vectors` (trained on a sample of at most 64 * nlist rows)."""
    import faiss

    n, dim = vectors.shape
    nlist = max(1, min(nlist or int(4 * np.sqrt(n)), n))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vectors if n <= 64 * nlist else vectors[np.sort(rng.choice(n, 64 * nlist, replace=False))]
    index.cp.seed = seed
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    index.nprobe = min(nprobe, nlist)
    return index


def _load_npy(bundle: Bundle, name: str) -> np.ndarray:
    return np.load(bundle.file(f"{COMPONENT}/{name}"), allow_pickle=False)


def _require(condition: bool, bundle: Bundle, message: str) -> None:
    if not condition:
        raise BundleError(f"bundle {bundle.id}: retriever files are inconsistent: {message}")


def calibrate_nprobe(
    index: faiss.Index, users: np.ndarray, items: np.ndarray, target: float, k: int, n_users: int, seed: int = 0
) -> float:
    """Double `index.nprobe` (from its current value) until the recall@k of sampled users against exact search
    reaches `target` or every cell is probed; returns the recall reached. Seen items are ignored here."""
    rng = np.random.default_rng(seed)
    sample = users[np.sort(rng.choice(len(users), min(n_users, len(users)), replace=False))]
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    k = min(k, len(items))
    scores = sample @ items.T
    truth = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < len(items) else np.argsort(-scores, axis=1)
    while True:
        _, found = index.search(sample, k)
        recall = float(np.mean([np.isin(f, t).sum() / k for f, t in zip(found, truth, strict=True)]))
        if recall >= target or index.nprobe >= index.nlist:
            return recall
        index.nprobe = min(index.nprobe * 2, index.nlist)


class RecallIndex:
    """One bundle's vectors, seen sets and popularity, plus the cold items projected with its projection.

    Everything but `cold` is fixed at load; `cold` is one reference to an immutable ColdItems, swapped by
    Retriever. A search reads `cold` once, so it uses one consistent set.
    """

    def __init__(
        self,
        bundle_id: str,
        user_ids: Sequence[str],
        user_vectors: np.ndarray,
        item_ids: Sequence[str],
        item_vectors: np.ndarray,
        seen_indptr: np.ndarray,
        seen_indices: np.ndarray,
        popularity: np.ndarray,
        projection: Projection | None,
        model: str = "BPR",
        options: SearchOptions | None = None,
    ) -> None:
        self.bundle_id = bundle_id
        self.model = model
        self.source = model.lower()
        self.options = options or SearchOptions()
        self.user_index = {u: i for i, u in enumerate(user_ids)}
        self.user_vectors = user_vectors
        self.item_ids = list(item_ids)
        self.item_index = {t: i for i, t in enumerate(self.item_ids)}
        self.item_vectors = item_vectors
        self.seen_indptr = seen_indptr
        self.seen_indices = seen_indices
        self.popularity = popularity
        self.popular = np.argsort(-popularity, kind="stable")  # most played first; ties keep item order
        self.projection = projection
        self.cold = ColdItems.empty(item_vectors.shape[1])
        self.ivf = build_ivf(item_vectors, self.options.ivf_nlist, self.options.ivf_nprobe) if (
            self.options.use_ivf(len(item_vectors))
        ) else None  # fmt: skip
        self.ivf_recall: float | None = None  # sampled users' recall@ivf_check_k at the chosen nprobe
        if self.ivf is not None and self.options.ivf_target_recall > 0 and len(user_vectors):
            self.ivf_recall = calibrate_nprobe(
                self.ivf, user_vectors, item_vectors, self.options.ivf_target_recall,
                self.options.ivf_check_k, self.options.ivf_check_users,
            )  # fmt: skip
            log.info("bundle %s: IVF nprobe %d gives recall@%d %.4f on sampled users", bundle_id,
                     self.ivf.nprobe, self.options.ivf_check_k, self.ivf_recall)  # fmt: skip

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    @classmethod
    def from_bundle(cls, bundle: Bundle, options: SearchOptions | None = None) -> RecallIndex:
        """Read `<bundle>/retriever/` (already checksum-verified by load_bundle) and check its shapes."""
        options = options or SearchOptions()
        if COMPONENT not in bundle.components:
            raise BundleError(f"bundle {bundle.id} has no retriever component (components: {list(bundle.components)})")
        meta = json.loads(bundle.file(f"{COMPONENT}/retriever.json").read_text())
        _require(meta.get("format_version") == FORMAT_VERSION, bundle, f"format {meta.get('format_version')}")
        model = str(meta.get("model", "BPR"))
        if options.model and model.lower() != options.model.lower():
            raise BundleError(
                f"bundle {bundle.id} holds a {model} retriever, but this service is set to serve {options.model}"
            )
        user_ids, item_ids = _load_npy(bundle, "user_ids.npy"), _load_npy(bundle, "item_ids.npy")
        users, items = _load_npy(bundle, "user_vectors.npy"), _load_npy(bundle, "item_vectors.npy")
        popularity = _load_npy(bundle, "popularity.npy")
        with np.load(bundle.file(f"{COMPONENT}/seen.npz"), allow_pickle=False) as seen:
            indptr, indices = seen["indptr"], seen["indices"]
        n_users, n_items = len(user_ids), len(item_ids)
        _require(users.shape == (n_users, meta["dim"]), bundle, f"user_vectors {users.shape}")
        _require(items.shape == (n_items, meta["dim"]), bundle, f"item_vectors {items.shape}")
        _require(users.dtype == items.dtype == np.float32, bundle, "vectors must be float32")
        _require(bool(np.isfinite(users).all() and np.isfinite(items).all()), bundle, "vectors hold NaN or inf")
        _require(len(set(user_ids)) == n_users and len(set(item_ids)) == n_items, bundle, "duplicate ids")
        _require(popularity.shape == (n_items,), bundle, f"popularity {popularity.shape}")
        _require(indptr.shape == (n_users + 1,) and indptr[0] == 0 and indptr[-1] == len(indices), bundle, "seen")
        _require(bool((np.diff(indptr) >= 0).all()), bundle, "seen.indptr is not monotone")
        _require(len(indices) == 0 or 0 <= indices.min() <= indices.max() < n_items, bundle, "seen item out of range")
        projection = None
        if meta.get("projection"):
            with np.load(bundle.file(f"{COMPONENT}/projection.npz"), allow_pickle=False) as p:
                projection = Projection(p["weight"], p["bias"], p["mean"], p["std"], dict(meta["encoder"]))
            c = projection.content_dim
            _require(projection.weight.shape == (c, meta["dim"]), bundle, f"projection {projection.weight.shape}")
            _require(projection.bias.shape == (meta["dim"],) and projection.std.shape == (c,), bundle, "projection")
            _require(bool((projection.std > 0).all()), bundle, "projection.std must be positive")
        return cls(
            bundle.id, user_ids.tolist(), users, item_ids.tolist(), items, indptr, indices, popularity, projection,
            model, options,
        )  # fmt: skip

    def seen(self, user_row: int) -> np.ndarray:
        return self.seen_indices[self.seen_indptr[user_row] : self.seen_indptr[user_row + 1]]

    def candidates(
        self, user_id: str, k: int, played: Sequence[str] = (), exclude: Sequence[str] = ()
    ) -> CandidateList:
        """Top-k for a known user (played items excluded, cold items included); for a user the bundle does not
        know, a fold-in when `played` names tracks it holds (their vectors' mean as the user vector: source
        "foldin"), else the k most played. Tracks in `exclude` (recent events) are left out in every case."""
        cold = self.cold  # read once: this request uses one snapshot
        row = self.user_index.get(user_id)
        if row is None:
            user = self.fold_in(played, cold)
            if user is None:
                drop = set(exclude)
                top = [i for i in self.popular[: k + len(drop)] if self.item_ids[i] not in drop][:k]
                found = [Candidate(self.item_ids[i], float(self.popularity[i]), False) for i in top]
                return CandidateList(user_id, False, "popularity", self.bundle_id, found)
            source, seen = FOLDIN_SOURCE, np.zeros(0, np.int64)
        else:
            source, user, seen = self.source, self.user_vectors[row], self.seen(row)
        found = self._search(user, seen, cold, k, set(exclude) | set(played))
        return CandidateList(user_id, row is not None, source, self.bundle_id, found)

    def fold_in(self, played: Sequence[str], cold: ColdItems) -> np.ndarray | None:
        """A user vector for a listener the bundle does not know: the mean of their played tracks' vectors."""
        vectors = [self.item_vectors[self.item_index[t]] for t in played if t in self.item_index]
        vectors += [cold.vectors[cold.index[t]] for t in played if t in cold.index]
        return np.mean(vectors, axis=0).astype(np.float32) if vectors else None

    def _search(self, user: np.ndarray, seen: np.ndarray, cold: ColdItems, k: int, drop: set[str]) -> list[Candidate]:
        want = k + len(drop)
        if self.ivf is not None:
            top, scores = self._ivf_top(user, seen, cold, want)
        else:
            top, scores = self._exact_top(user, seen, cold, want)
        quota = min(len(cold), math.ceil(self.options.cold_share * want))
        if quota:
            top, scores = self._reserve_cold(top, scores, cold, user, quota, want)
        n_items = len(self.item_ids)
        found = [
            Candidate(self.item_ids[i], float(s), False)
            if i < n_items
            else Candidate(cold.ids[i - n_items], float(s), True)
            for i, s in zip(top.tolist(), scores.tolist(), strict=True)
        ]
        return [c for c in found if c.track_id not in drop][:k]

    def _exact_top(self, user: np.ndarray, seen: np.ndarray, cold: ColdItems, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the k best unseen items, best first; rows >= n_items are cold items."""
        scores = self.item_vectors @ user  # a fresh (I,) array, safe to mask
        scores[seen] = -np.inf
        if len(cold):
            scores = np.concatenate([scores, cold.vectors @ user])
        k = min(k, len(scores) - len(seen))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    def _reserve_cold(
        self, top: np.ndarray, scores: np.ndarray, cold: ColdItems, user: np.ndarray, quota: int, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """At least `quota` of the k rows are cold: this listener's best-matching new tracks take the places of
        the lowest-scored trained ones. A projected content vector scores lower than a trained one (the ridge map
        shrinks it), so without a quota new tracks rarely reach the ranker, which is the one to judge them."""
        n_items = len(self.item_ids)
        missing = quota - int((top >= n_items).sum())
        if missing <= 0:
            return top, scores
        cold_scores = cold.vectors @ user
        best = n_items + np.argsort(-cold_scores, kind="stable")[:quota]
        extra = best[~np.isin(best, top)][:missing]
        rows = np.concatenate([top, extra])
        all_scores = np.concatenate([scores, cold_scores[extra - n_items]])
        drop = len(rows) - k
        if drop > 0:  # the lowest-scored trained rows make room
            warm = np.flatnonzero(rows < n_items)
            keep = np.ones(len(rows), bool)
            keep[warm[np.argsort(all_scores[warm], kind="stable")[:drop]]] = False
            rows, all_scores = rows[keep], all_scores[keep]
        order = np.argsort(-all_scores, kind="stable")
        return rows[order], all_scores[order]

    def _ivf_top(self, user: np.ndarray, seen: np.ndarray, cold: ColdItems, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like _exact_top, with trained items from the IVF index (asked for k + |seen| so that k survive)."""
        assert self.ivf is not None
        want = min(k + len(seen), len(self.item_ids))
        scores, rows = self.ivf.search(np.ascontiguousarray(user[None], dtype=np.float32), want)
        scores, rows = scores[0], rows[0]
        keep = (rows >= 0) & ~np.isin(rows, seen)
        rows, scores = rows[keep], scores[keep]
        if len(cold):
            rows = np.concatenate([rows, len(self.item_ids) + np.arange(len(cold))])
            scores = np.concatenate([scores, cold.vectors @ user])
        order = np.argsort(-scores, kind="stable")[:k]
        return rows[order], scores[order]


# --- The service state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentRecord:
    embedding: np.ndarray  # (C,) float32
    encoder: str
    encoder_revision: str


AddStatus = Literal["added", "replaced", "in_bundle"]


class Retriever:
    """The loaded index plus every cold track's content; the cold vectors always follow the current bundle.

    Cold content is kept apart from the index, so a reload re-projects it with the new bundle's projection
    (tracks the new bundle has trained vectors for, or whose encoder it does not match, drop out).
    """

    def __init__(self, options: SearchOptions | None = None) -> None:
        self.options = options or SearchOptions()
        self.holder: BundleHolder[RecallIndex] = BundleHolder(self._build)
        self._records: dict[str, ContentRecord] = {}
        self._lock = threading.Lock()  # writers only: records and cold swaps

    @property
    def loaded(self) -> bool:
        return self.holder.loaded

    @property
    def index(self) -> RecallIndex:
        return self.holder.state

    def candidates(
        self, user_id: str, k: int, played: Sequence[str] = (), exclude: Sequence[str] = ()
    ) -> CandidateList:
        return self.holder.state.candidates(user_id, k, played, exclude)

    def reload(self, path: Any) -> Bundle:
        """Verify and swap in the bundle at `path`; BundleError keeps the old one serving."""
        bundle = self.holder.reload(path)
        with self._lock:  # a track added between the build and the swap went to the old index only
            self._sync(self.holder.state)
        return bundle

    def _build(self, bundle: Bundle) -> RecallIndex:
        """The new index with its cold tracks already projected, so a swap never hides them."""
        index = RecallIndex.from_bundle(bundle, self.options)
        with self._lock:
            self._sync(index)
        return index

    def add_item(self, track_id: str, embedding: Sequence[float], encoder: str, encoder_revision: str) -> AddStatus:
        """Make a new track retrievable now; ColdItemRefused when its content does not fit this bundle."""
        index = self.holder.state
        with np.errstate(over="ignore"):
            vector = np.asarray(embedding, dtype=np.float32)
        if index.projection is None:
            raise ColdItemRefused(f"bundle {index.bundle_id} has no content projection: new tracks cannot be added")
        index.projection.check(vector, encoder, encoder_revision)
        if track_id in index.item_index:
            return "in_bundle"  # its trained vector is better than a projected one
        with self._lock:
            status: AddStatus = "replaced" if track_id in self._records else "added"
            self._records[track_id] = ContentRecord(vector, encoder, encoder_revision)
            current = self.holder.state  # a reload may have swapped it since the checks
            if current is index:
                index.cold = index.cold.with_item(track_id, index.projection.apply(vector[None])[0])
            else:
                self._sync(current)
        return status

    def pick_up(self, store: Store) -> int:
        """Read content of tracks in the store's offline sources that neither the bundle nor the catalogue
        holds (pushed since the bundle was built); returns how many became retrievable."""
        index = self.holder.state
        new = [t for t in store.offline_track_ids() if t not in index.item_index and t not in self._records]
        if not new:
            return 0
        rows: dict[str, dict[str, Any]] = {}
        for start in range(0, len(new), STORE_READ_CHUNK):
            rows.update(store.get_tracks(new[start : start + STORE_READ_CHUNK], views=[fn.TRACK_CONTENT]))
        with self._lock:
            for track_id, row in rows.items():
                if row.get("embedding") is not None and track_id not in self._records:
                    vector = np.asarray(row["embedding"], dtype=np.float32)
                    self._records[track_id] = ContentRecord(vector, row["encoder"], row["encoder_revision"])
            before = len(self.holder.state.cold)
            self._sync(self.holder.state)
            return len(self.holder.state.cold) - before

    def _sync(self, index: RecallIndex) -> None:
        """Rebuild `index.cold` from every record it can use (caller holds the lock)."""
        usable: list[tuple[str, np.ndarray]] = []
        for track_id, record in self._records.items():
            if track_id in index.item_index or index.projection is None:
                continue
            try:
                index.projection.check(record.embedding, record.encoder, record.encoder_revision)
            except ColdItemRefused as refused:
                log.warning("cold track %s left out of bundle %s: %s", track_id, index.bundle_id, refused)
                continue
            usable.append((track_id, record.embedding))
        if not usable:
            index.cold = ColdItems.empty(index.dim)
            return
        ids = tuple(t for t, _ in usable)
        assert index.projection is not None
        vectors = index.projection.apply(np.stack([v for _, v in usable]))
        index.cold = ColdItems(ids, {t: i for i, t in enumerate(ids)}, vectors)
