"""The retriever's logic, callable without HTTP: recall vectors from a bundle, top-k search, cold tracks.

- `RecallIndex.from_bundle` reads `<bundle>/retriever/` through encore/retriever_bundle.py (written by
  training for any recall model: BPR, VBPR, FREEDOM, LGMRec; it becomes the candidates' source).
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

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from encore import feature_names as fn
from encore.artifacts import Bundle, BundleError, BundleHolder
from encore.retriever_bundle import ColdItemRefused, ContentProjection, RetrieverComponent
from encore.store import Store

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)

STORE_READ_CHUNK = 500
# A known user's training plays sent with their candidates: those closest to the user's own vector, enough for
# the ranker to find, for most recommended tracks, one that sounds alike (services/ranker/reasons.py).
HISTORY_FOR_REASONS = 30
FOLDIN_SOURCE = "foldin"  # candidates of a listener unknown to the bundle, from their played tracks' vectors
# An async caller searches off its event loop from this many items on (exact search: several ms at 200k x 64
# floats); below, the search is short numpy work and a thread round trip would cost more than it saves.
THREAD_MIN_ITEMS = 200_000


@dataclass(frozen=True)
class ColdItems:
    """Tracks added after the bundle was built, with their projected vectors; replaced whole, never mutated."""

    ids: tuple[str, ...]
    index: dict[str, int]
    vectors: np.ndarray  # (n, D) float32
    content: np.ndarray  # (n, C) float32: each track's stored content vector at unit length (fold-in order)

    @classmethod
    def empty(cls, dim: int) -> ColdItems:
        return cls((), {}, np.zeros((0, dim), np.float32), np.zeros((0, 0), np.float32))

    @classmethod
    def of(cls, ids: Sequence[str], vectors: np.ndarray, content: np.ndarray) -> ColdItems:
        """`content`: the tracks' stored content vectors, as kept (made unit length here)."""
        return cls(tuple(ids), {t: i for i, t in enumerate(ids)}, vectors, unit_rows(content))

    def __len__(self) -> int:
        return len(self.ids)

    def with_item(self, track_id: str, vector: np.ndarray, content: np.ndarray) -> ColdItems:
        """A copy with the track's vector (and content) added or replaced."""
        if not len(self.ids):
            return ColdItems.of((track_id,), vector[None], content[None])
        if track_id in self.index:
            vectors, contents = self.vectors.copy(), self.content.copy()
            vectors[self.index[track_id]], contents[self.index[track_id]] = vector, unit_rows(content[None])[0]
            return ColdItems(self.ids, self.index, vectors, contents)
        return ColdItems.of((*self.ids, track_id), np.vstack([self.vectors, vector[None]]),
                            np.vstack([self.content, content[None]]))  # fmt: skip

    def content_profile(self, played: Sequence[str]) -> np.ndarray | None:
        """The mean of the played uploads' unit content vectors (a fold-in in content space); None without any."""
        rows = [self.index[t] for t in played if t in self.index]
        return self.content[rows].mean(axis=0) if rows else None


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, and ~220 are built per search
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
    history: list[str] = field(default_factory=list)  # some of a known user's training plays (ranker reasons)


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
    # A known user's vector is blended with the fold-in of their plays, n / (n + foldin_prior) on the trained one
    # (n: their training plays). A listener the bundle saw a few times has a weak trained vector: the replay
    # measured new listeners' Recall@20 falling from 0.346 (fold-in) to 0.250 once a retrain knew them. 0: off.
    foldin_prior: float = 10.0

    def use_ivf(self, n_items: int) -> bool:
        return self.index == "ivf" or (self.index == "auto" and n_items >= self.ivf_min_items)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties: lower index first), without sorting them all."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    # argpartition picks any of the items tied at the k-th score: take the lowest indices among them
    above, tied = np.flatnonzero(scores > kth), np.flatnonzero(scores == kth)
    part = np.concatenate([above, tied[: k - len(above)]])
    return part[np.lexsort((part, -scores[part]))]


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
        projection: ContentProjection | None,
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
        files = RetrieverComponent.read(bundle)
        if options.model and files.model.lower() != options.model.lower():
            raise BundleError(
                f"bundle {bundle.id} holds a {files.model} retriever, but this service is set to serve {options.model}"
            )
        return cls(
            bundle.id, files.user_ids.tolist(), files.user_vectors, files.item_ids.tolist(), files.item_vectors,
            files.seen_indptr, files.seen_indices, files.popularity, files.projection, files.model, options,
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
            source, seen, profile = FOLDIN_SOURCE, np.zeros(0, np.int64), cold.content_profile(played)
        else:
            source, seen, profile = self.source, self.seen(row), None
            user = self._blend(self.user_vectors[row], seen, played, cold)
        found = self._search(user, seen, cold, k, set(exclude) | set(played), profile)
        history = self._history(user, seen)
        return CandidateList(user_id, row is not None, source, self.bundle_id, found, history)

    def _history(self, user: np.ndarray, seen: np.ndarray) -> list[str]:
        """The HISTORY_FOR_REASONS training plays that suit the user best (their own vector's top), for the
        ranker's "sounds like a track you played" reasons; [] for a user without any."""
        if len(seen) > HISTORY_FOR_REASONS:
            scores = self.item_vectors[seen] @ user
            seen = seen[np.argpartition(-scores, HISTORY_FOR_REASONS - 1)[:HISTORY_FOR_REASONS]]
        return [self.item_ids[i] for i in seen.tolist()]

    def fold_in(self, played: Sequence[str], cold: ColdItems, rows: np.ndarray | None = None) -> np.ndarray | None:
        """A user vector for a listener the bundle does not know: the mean of their played tracks' vectors
        (tracks it holds, new tracks by their projected content; `rows`: item rows besides, a user's training plays)."""
        blocks = [  # one (n, d) block per source, in this order: the same rows np.mean saw as a list of vectors
            self.item_vectors[[self.item_index[t] for t in played if t in self.item_index]],
            cold.vectors[[cold.index[t] for t in played if t in cold.index]],
            *([self.item_vectors[rows]] if rows is not None and len(rows) else []),
        ]
        blocks = [b for b in blocks if len(b)]  # an empty cold set's vectors may not be (0, d)
        return np.mean(np.concatenate(blocks), axis=0).astype(np.float32) if blocks else None

    def _blend(self, trained: np.ndarray, seen: np.ndarray, played: Sequence[str], cold: ColdItems) -> np.ndarray:
        """The trained vector, shrunk towards the fold-in of the user's training and recent plays while they are few:
        weight n / (n + foldin_prior) on the trained one. The fold-in is scaled to the trained vector's norm, so
        the blend moves the direction, not the scores' scale that the cold quota and the ranker see."""
        prior = self.options.foldin_prior
        folded = self.fold_in(played, cold, seen) if prior > 0 else None
        norm, folded_norm = float(np.linalg.norm(trained)), float(np.linalg.norm(folded)) if folded is not None else 0.0
        if folded is None or norm == 0 or folded_norm == 0:
            return trained
        weight = len(seen) / (len(seen) + prior)
        return (weight * trained + (1 - weight) * folded * (norm / folded_norm)).astype(np.float32)

    def _search(
        self, user: np.ndarray, seen: np.ndarray, cold: ColdItems, k: int, drop: set[str],
        profile: np.ndarray | None = None,
    ) -> list[Candidate]:  # fmt: skip
        """`profile`: a fold-in listener's played uploads in content space (ColdItems.content_profile)."""
        want = k + len(drop)
        if self.ivf is not None:
            top, scores = self._ivf_top(user, seen, cold, want)
        else:
            top, scores = self._exact_top(user, seen, cold, want)
        quota = min(len(cold), math.ceil(self.options.cold_share * want))
        if quota:
            top, scores = self._reserve_cold(top, scores, cold, user, quota, want)
        if profile is not None and len(cold):
            top, scores = self._cold_by_sound(top, scores, cold, user, profile, drop)
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
        best = n_items + top_k(cold_scores, quota)  # a partial sort: the cold set can be large
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

    def _cold_by_sound(
        self, top: np.ndarray, scores: np.ndarray, cold: ColdItems, user: np.ndarray, profile: np.ndarray,
        drop: set[str],
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """A fold-in listener's ranks held by new tracks go to the new tracks whose content is closest to their
        played uploads' (cosine to `profile`), closest first: the projected item vectors, mixed and shrunk by the
        ridge map, say little about sound. Played and excluded tracks are not chosen (the search drops them)."""
        n_items = len(self.item_ids)
        slots = np.flatnonzero(top >= n_items)
        closeness = cold.content @ profile
        closeness[[cold.index[t] for t in drop if t in cold.index]] = -np.inf
        chosen = top_k(closeness, len(slots))
        top, scores = top.copy(), scores.copy()
        top[slots], scores[slots] = n_items + chosen, cold.vectors[chosen] @ user
        return top, scores

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
                index.cold = index.cold.with_item(track_id, index.projection.apply(vector[None])[0], vector)
            else:
                self._sync(current)
        return status

    def remove_item(self, track_id: str) -> bool:
        """Forget a cold track (DELETE /tracks/{id} on the embedder); False when it was not held. Tracks in the
        bundle cannot be removed here: ColdItemRefused (they leave with the next training run)."""
        if track_id in self.holder.state.item_index:
            raise ColdItemRefused(f"track {track_id!r} is in bundle {self.holder.state.bundle_id}, not an upload")
        with self._lock:
            found = self._records.pop(track_id, None) is not None
            self._sync(self.holder.state)
        return found

    def similar(self, track_id: str, k: int) -> list[tuple[str, float]]:
        """The k catalog tracks nearest `track_id` (cosine in the recall space; an upload by its projected
        content vector); KeyError when the track is neither in the bundle nor held as cold."""
        index = self.holder.state
        if track_id in index.item_index:
            vector = index.item_vectors[index.item_index[track_id]]
        else:
            vector = index.cold.vectors[index.cold.index[track_id]]
        items = index.item_vectors
        norms = np.linalg.norm(items, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
        scores = (items @ vector) / np.maximum(norms, 1e-12)
        if (own := index.item_index.get(track_id)) is not None:
            scores[own] = -np.inf  # never the track itself
        top = np.argsort(-scores, kind="stable")[:k]
        return [(index.item_ids[i], float(scores[i])) for i in top.tolist()]

    def history(self, user_id: str) -> list[str] | None:
        """The tracks the bundle's training data has the user playing; None for a user the bundle lacks."""
        index = self.holder.state
        row = index.user_index.get(user_id)
        return None if row is None else [index.item_ids[i] for i in index.seen(row).tolist()]

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
        assert index.projection is not None
        content = np.stack([v for _, v in usable])
        index.cold = ColdItems.of([t for t, _ in usable], index.projection.apply(content), content)
