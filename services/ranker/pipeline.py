"""The recommend path as steps: user features >> retrieve >> item features >> score >> steer >> order.

Each step takes its config in `__init__`, opens heavy resources in `load()`, and does the work in
`__call__`, which takes and gives only what this table says (no step reaches into another):

| step           | takes                                         | gives                                          |
|----------------|-----------------------------------------------|------------------------------------------------|
| `UserFeatures` | user_id                                       | `UserRow`: profile (None: unknown), degraded   |
| `Retrieve`     | user_id, n, the bundle's popularity list      | `Candidates`: ids, cold, source, history, degraded |
| `ItemFeatures` | track ids                                     | `ItemRows`: TrackFeatures in that order, degraded |
| `Score`        | model, user_id, profile, TrackFeatures        | (n,) scores                                    |
| `Steer`        | query's tag similarities, tracks' tags, scores | `Steering`: order keys, query matches (steer.py) |
| `Order`        | Candidates, TrackFeatures, scores, k, Steering, played | ranked items with reasons (played: the   |
|                |                                               | played tracks' TrackFeatures: "sounds like")   |

`Ranker.user_rows` reads what `UserFeatures` (a profile cache miss) and `RecentActivity` need in one store read
per request. `Retrieve` asks the retriever service over HTTP; `RetrieveInProcess` gives the same from the
retriever's search in this process (ENCORE_RANKER_RETRIEVAL=inprocess).

An unknown user or track is decided once, where it is looked up (UserFeatures: profile None; ItemFeatures:
the track's rows marked invalid), and encoded by the one frame builder (encore/ranker_frame.py) as OOV /
zeros. A step that had to degrade says why in its output; `Ranker.recommend` wires the steps and collects
those reasons; the model state comes from one bundle per request. Blocking store reads (a user cache miss,
tracks the in-process table does not hold) run in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp
import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from encore import feature_names as fn
from encore.artifacts import BundleHolder
from encore.ranker_frame import ACTIVITY_COLUMNS, PROFILE, PROFILE_N, TrackFeatures, build_frame, uses_activity
from encore.schema import FeatureSpec
from encore.settings import RetrieverSettings
from encore.store import Store
from encore.track_snapshot import TrackSnapshots
from encore.track_table import TrackTable
from services.common.errors import ServiceError
from services.common.observability import RankerMetrics
from services.ranker.bundle import RankerModel, reload_bundle
from services.ranker.encoded_items import ItemInputCache
from services.ranker.foldin import content_closeness, foldin_order
from services.ranker.reasons import played_tracks, sound_tags, sounds_like
from services.ranker.reasons import reason as reason_for
from services.ranker.steer import Steer, Steering
from services.retriever.search import THREAD_MIN_ITEMS, CandidateList, Retriever
from services.retriever.state import pick_up_loop, search_options, search_threads

log = logging.getLogger("encore.ranker")

POPULARITY_SOURCE = "popularity"
FOLDIN_SOURCE = "foldin"  # the retriever's candidate_source for a fold-in (services/retriever/search.py)
POSITIVE_TYPES = frozenset({"play", "like"})  # events that make a recent track "played"
T = TypeVar("T")


@dataclass(frozen=True)
class Candidates:
    """What retrieval gave: ids in retrieval order, which are cold, where they came from, and why degraded."""

    track_ids: list[str]
    cold: dict[str, bool]
    source: str
    degraded_reason: str | None = None
    history: list[str] = field(default_factory=list)  # some of the user's training plays (reasons only)

    def head(self, n: int) -> Candidates:
        ids = self.track_ids[:n]
        cold = {t: self.cold.get(t, False) for t in ids}
        return Candidates(ids, cold, self.source, self.degraded_reason, self.history)


class UserRow(NamedTuple):
    """What UserFeatures gives: the user's profile (None when unknown or unreadable), and why it degraded."""

    profile: dict[str, Any] | None
    degraded: str | None = None


class ItemRows(NamedTuple):
    """What ItemFeatures gives: the tracks' features in request order, and why it degraded."""

    features: TrackFeatures
    degraded: str | None = None


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, and k are built per request
class RankedItem:
    track_id: str
    score: float
    rank: int
    artist_id: str | None
    genre: str | None
    release_year: int | None
    cold: bool
    reason: str
    tags: list[str] = field(default_factory=list)
    query_match: float | None = None


@dataclass(frozen=True)
class Recommendation:
    user_id: str
    bundle_id: str
    model: str
    candidate_source: str
    items: list[RankedItem]
    degraded_reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recent:
    exclude: list[str]  # every recent track, newest first
    played: list[str]  # recent tracks whose latest event was a play or a like, newest first
    # the row's recent-event features (ACTIVITY_COLUMNS) and content profile (PROFILE, PROFILE_N: content_affinity)
    features: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> Recent:
        if not row or not row.get("recent_tracks"):
            return cls([], [])
        tracks, types = row["recent_tracks"], row.get("recent_types") or []
        latest: dict[str, str] = {}
        for track, kind in zip(tracks, types, strict=False):  # newest first: the first type seen is the latest
            latest.setdefault(track, kind)
        features = {c: row[c] for c in (*ACTIVITY_COLUMNS, PROFILE, PROFILE_N) if row.get(c) is not None}
        return cls(list(latest), [t for t, kind in latest.items() if kind in POSITIVE_TYPES], features)

    def user_row(self, profile: dict[str, Any] | None) -> dict[str, Any] | None:
        """The ranker's user mapping: the profile plus these recent-event features and content profile (for a spec
        that reads them)."""
        return {**(profile or {}), **self.features} if self.features else profile


NO_RECENT = Recent([], [])


# --- logging ---------------------------------------------------------------------------------------------

WARN_EVERY_S = 5.0
_last_warning: dict[str, tuple[float, int]] = {}  # kind -> (time of the last line, lines suppressed since)


def warn_throttled(kind: str, message: str, *args: Any) -> None:
    """One warning line per `kind` every WARN_EVERY_S: an outage at hundreds of requests/s must not flood the log
    (or block on a slow log sink). The line says how many were suppressed since the previous one."""
    now = time.monotonic()
    last, suppressed = _last_warning.get(kind, (-WARN_EVERY_S, 0))
    if now - last < WARN_EVERY_S:
        _last_warning[kind] = (last, suppressed + 1)
        return
    _last_warning[kind] = (now, 0)
    log.warning(message + (f" (and {suppressed} more like it)" if suppressed else ""), *args)


# --- store access ----------------------------------------------------------------------------------------


class StoreUnavailable(RuntimeError):
    """The online store failed recently and has not answered a ping since: the read was not attempted."""


class StoreGuard:
    """Runs blocking store reads in a worker thread, and fails fast while the store is down.

    A read against a stopped Redis takes ~5 s to fail (redis-py retries with backoff); without this guard every
    request would wait that long and the worker threads would fill up. After a failure, reads are refused at
    once; at most every `probe_interval_s` one request pings the store (milliseconds), and when the ping
    answers reads resume. State changes happen on the event loop thread only, so no lock is needed.
    """

    def __init__(self, store: Store, probe_interval_s: float = 0.5):
        self.store, self.probe_interval_s = store, probe_interval_s
        self.down_since: float | None = None
        self._next_probe = 0.0

    async def read(self, call: Callable[..., T], *args: Any) -> T:
        if self.down_since is not None:
            now = time.monotonic()
            if now < self._next_probe:
                raise StoreUnavailable(f"online store down for {now - self.down_since:.1f} s; read not attempted")
            self._next_probe = now + self.probe_interval_s
            if not await asyncio.to_thread(self.store.ping):
                raise StoreUnavailable(f"online store down for {now - self.down_since:.1f} s; ping failed")
            log.info("online store answers again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
        try:
            return await asyncio.to_thread(call, *args)
        except Exception:
            if self.down_since is None:
                self.down_since = time.monotonic()
                self._next_probe = self.down_since + self.probe_interval_s
            raise


# --- steps ---------------------------------------------------------------------------------------------


class UserFeatures:
    """user_id -> UserRow: the user_profile row (None when unknown), behind a small TTL cache before the store.

    When the store fails, an expired entry is served rather than nothing; a user never cached is scored
    without a profile and the row says why (the answer is flagged degraded).
    """

    def __init__(self, store: Store, ttl_s: float = 60.0, max_entries: int = 100_000, guard: StoreGuard | None = None):
        self.store, self.ttl_s, self.max_entries = store, ttl_s, max_entries
        self.guard = guard or StoreGuard(store)
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}  # id -> (expires, row)

    def load(self) -> None:
        self._cache.clear()

    async def __call__(self, user_id: str) -> UserRow:
        fresh = self.fresh(user_id)
        if fresh is not None:
            return fresh
        try:
            rows = await self.guard.read(self.store.get_users, [user_id])
        except Exception as error:
            return self.unavailable(user_id, error)
        return self.remember(user_id, rows.get(user_id))

    def fresh(self, user_id: str) -> UserRow | None:
        """The cached row while it is fresh; None: read the store (then `remember` or `unavailable`)."""
        hit = self._cache.get(user_id)
        return UserRow(hit[1]) if hit is not None and hit[0] > time.monotonic() else None

    def remember(self, user_id: str, row: dict[str, Any] | None) -> UserRow:
        """Cache what the store answered (None: an unknown user, cached too)."""
        if len(self._cache) >= self.max_entries and user_id not in self._cache:
            self._cache.pop(next(iter(self._cache)))  # the oldest insertion (dicts keep insertion order)
        self._cache[user_id] = (time.monotonic() + self.ttl_s, row)
        return UserRow(row)

    def unavailable(self, user_id: str, error: Exception) -> UserRow:
        """The store failed: an expired profile beats none; a user never cached is scored without one."""
        hit = self._cache.get(user_id)
        if hit is not None:
            warn_throttled("stale_user", "user store unavailable; user %s scored with a cached profile", user_id)
            return UserRow(hit[1])
        reason = f"user store unavailable: {type(error).__name__}: {error}"  # scored as an unknown user is
        warn_throttled("user", "%s; user %s scored without profile", reason, user_id)
        return UserRow(None, reason)


# A listener's recent events (user_activity, pushed by POST /events), read on every request and never cached: the
# profile cache (UserFeatures, 60 s) holds training-time profiles only, so an event acknowledged by the embedder
# reaches the next /recommend (one online read, ~1 ms). Rules (docs/events.md):
# - every track in the listener's recent window (the last ENCORE_EMBEDDER_EVENTS_RECENT_N events, whatever
#   their type) is filtered out of the answer: played, skipped, liked and disliked tracks alike;
# - the tracks of play and like events in that window, unless a later skip or dislike of the same track followed,
#   are "played": for a listener the bundle does not know, the retriever folds them in (mean of their vectors) and
#   answers with candidate_source "foldin";
# - the ranker's model cannot personalize a listener it was not trained on (their id and profile are unknown to it:
#   its score is the same for every such listener), so for "foldin" it orders only the fold-in's first
#   ENCORE_RANKER_FOLDIN_CANDIDATES (default 50) candidates: the retriever picks what suits the listener, the model
#   orders it.
class RecentActivity:
    """user_id -> Recent, read through the ranker's StoreGuard (fails fast while the store is down).

    Read on every request. The last answer per user is kept only as a fallback: while the store is down, a user
    read before is served their last known recent tracks (like the profile cache serves a stale profile); a user
    never read raises, and the ranker answers degraded, without the filter and the fold-in.
    """

    def __init__(self, store: Store, guard: StoreGuard, max_entries: int = 100_000):
        self.store, self.guard, self.max_entries = store, guard, max_entries
        self._last: dict[str, Recent] = {}

    async def __call__(self, user_id: str) -> Recent:
        try:
            rows = await self.guard.read(self.store.get_activity, [user_id])
        except Exception as error:
            return self.unavailable(user_id, error)
        return self.remember(user_id, rows.get(user_id))

    def remember(self, user_id: str, row: dict[str, Any] | None) -> Recent:
        recent = Recent.from_row(row) if row else NO_RECENT  # most users have no events: one shared object
        if len(self._last) >= self.max_entries and user_id not in self._last:
            self._last.pop(next(iter(self._last)))  # the oldest insertion
        self._last[user_id] = recent
        return recent

    def unavailable(self, user_id: str, error: Exception) -> Recent:
        """The last answer read for the user; raises `error` for a user never read."""
        if user_id in self._last:
            return self._last[user_id]
        raise error


def popularity_candidates(
    error: Exception, user_id: str, n: int, popularity: Sequence[str], recent: Recent
) -> Candidates:
    """The bundle's most played tracks, less the listener's recent ones: what serves when retrieval failed."""
    reason = f"retriever unavailable: {type(error).__name__}: {error}".rstrip(": ")
    warn_throttled("retriever", "%s; serving popularity candidates for user %s", reason, user_id)
    drop = set(recent.exclude)
    ids = [t for t in popularity[: n + len(drop)] if t not in drop][:n]
    return Candidates(ids, dict.fromkeys(ids, False), POPULARITY_SOURCE, reason)


def retrieved_candidates(rows: Sequence[tuple[str, bool]], source: str, history: Sequence[str]) -> Candidates:
    """The retriever's (track id, cold) rows as Candidates, whichever way they came (HTTP or in-process)."""
    ids = list(dict.fromkeys(t for t, _ in rows))  # first occurrence wins
    if not ids:
        raise RuntimeError("it returned no candidates")
    return Candidates(ids, dict(rows), source, history=list(history))


class Retrieve:
    """Candidates from the retriever over one pooled aiohttp session; popularity when it fails."""

    mode = "http"

    def __init__(self, retriever_url: str, timeout_s: float):
        self.url = retriever_url.rstrip("/") + "/candidates"
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session: aiohttp.ClientSession | None = None

    def load(self) -> None:
        """Open the session; call from inside the running event loop (the app's lifespan)."""
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)

    def reload(self, path: Path) -> None:
        """Nothing to do: the retriever service loads its bundles itself (its own POST /admin/reload)."""

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def __call__(self, user_id: str, n: int, popularity: Sequence[str], recent: Recent = NO_RECENT) -> Candidates:
        try:
            return await self._from_retriever(user_id, n, recent)
        except Exception as error:  # any failure (down, slow, bad body) degrades instead of failing the request
            return popularity_candidates(error, user_id, n, popularity, recent)

    async def _from_retriever(self, user_id: str, n: int, recent: Recent = NO_RECENT) -> Candidates:
        if self.session is None:
            raise RuntimeError("Retrieve.load() was not called")
        params = [("user_id", user_id), ("k", str(n))]
        params += [("played", t) for t in recent.played] + [("exclude", t) for t in recent.exclude]
        async with self.session.get(self.url, params=params) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status} from {self.url}")
            body = await response.json()
        rows = [(str(row["track_id"]), bool(row.get("cold", False))) for row in body["candidates"]]
        history = [str(t) for t in body.get("history", [])]
        return retrieved_candidates(rows, str(body.get("source", "retriever")), history)


class RetrieveInProcess:
    """Candidates from the retriever's own search (services/retriever/search.py) in this process: no HTTP, no JSON
    (ENCORE_RANKER_RETRIEVAL=inprocess, for a single node). Same contract and fallback as Retrieve.

    The state is the retriever service's, started by the same loader (services/retriever/state.py): the bundle's
    retriever component, set by the ENCORE_RETRIEVER_* variables, plus tracks pushed to the store since the bundle
    (picked up every ENCORE_RETRIEVER_REFRESH_S). `reload` follows the ranker's own bundle reloads.
    """

    mode = "inprocess"

    def __init__(self, settings: RetrieverSettings, store: Store):
        self.settings, self.store = settings, store
        self.retriever = Retriever(search_options(settings))
        self._threads = ExitStack()  # the search's BLAS thread limit, held from load() to close()
        self._pick_up: asyncio.Task | None = None

    def load(self) -> None:
        """Limit the search's threads and start the store pick-up; call from inside the running event loop. The
        bundle comes with the ranker's (`reload`)."""
        self._threads.enter_context(search_threads(self.settings))
        interval = self.settings.retriever_refresh_s
        self._pick_up = asyncio.create_task(pick_up_loop(self.retriever, self.store, interval))

    def reload(self, path: Path) -> None:
        """Verify and swap in the retriever part of the bundle at `path`; BundleError keeps the old one."""
        self.retriever.reload(path)

    async def close(self) -> None:
        if self._pick_up is not None:
            self._pick_up.cancel()
            with suppress(asyncio.CancelledError):
                await self._pick_up
            self._pick_up = None
        self._threads.close()

    async def __call__(self, user_id: str, n: int, popularity: Sequence[str], recent: Recent = NO_RECENT) -> Candidates:
        n = min(n, self.settings.retriever_max_k)  # the service's cap (it answers 422 above it) holds here too
        try:
            found = await self._search(user_id, n, recent)
            rows = [(c.track_id, c.cold) for c in found.candidates]
            return retrieved_candidates(rows, found.source, found.history)
        except Exception as error:  # no bundle, or a bug: degrade as when the retriever service fails
            return popularity_candidates(error, user_id, n, popularity, recent)

    async def _search(self, user_id: str, n: int, recent: Recent) -> CandidateList:
        retriever = self.retriever
        if len(retriever.index.item_ids) >= THREAD_MIN_ITEMS:  # a long search: off the loop, as the retriever does
            return await asyncio.to_thread(retriever.candidates, user_id, n, recent.played, recent.exclude)
        return retriever.candidates(user_id, n, recent.played, recent.exclude)


class ItemFeatures:
    """track ids -> ItemRows from the in-process TrackTable; ids it does not hold are read from the store first,
    and those the store does not know either (or could not be asked) come back marked missing."""

    def __init__(
        self,
        store: Store,
        max_age_s: float = 300.0,
        miss_ttl_s: float = 1.0,
        guard: StoreGuard | None = None,
        snapshot_dir: Path | None = None,  # the persisted track table (encore/track_snapshot.py); None: store reads
    ):
        self.store, self.max_age_s, self.miss_ttl_s = store, max_age_s, miss_ttl_s
        self.guard = guard or StoreGuard(store)
        self.snapshot_dir = snapshot_dir
        self.table: TrackTable | None = None

    def load(self) -> None:
        snapshots = TrackSnapshots(self.store, self.snapshot_dir) if self.snapshot_dir is not None else None
        self.table = TrackTable(self.store, max_age_s=self.max_age_s, miss_ttl_s=self.miss_ttl_s, snapshots=snapshots)
        try:
            n = self.table.load()
            log.info("track table loaded: %d tracks", n)
        except Exception:  # serve anyway: tracks are then read from the store on their first request
            log.exception("track table could not be loaded at start; tracks will be read on demand")

    async def __call__(self, track_ids: Sequence[str]) -> ItemRows:
        table = self.table
        if table is None:
            raise RuntimeError("ItemFeatures.load() was not called")
        reason = None
        found, batch = table.held(track_ids)  # one snapshot: a reload meanwhile cannot split the answer
        if not found.all():
            try:  # off the event loop: this is a store read
                await self.guard.read(table.refresh, track_ids)
            except Exception as error:
                reason = f"track store unavailable: {type(error).__name__}: {error}"
                warn_throttled("tracks", "%s; unknown candidates scored without features", reason)
            found, batch = table.held(track_ids)
        return ItemRows(TrackFeatures.align(track_ids, found, batch, table), reason)


class Score:
    """(model, user, candidates' TrackFeatures) -> click probabilities, encoded with the bundle's feature spec.

    With an ItemInputCache, item inputs are gathered pre-encoded when it covers the request (the features say
    which table rows they are); otherwise (and without one) every field goes through the spec encoder. Both
    give the model the same inputs.
    """

    def __init__(self, cache: ItemInputCache | None = None):
        self.cache = cache

    def prepare(self, spec: FeatureSpec, table: TrackTable | None) -> None:
        """Encode the item inputs of every row of `table` for `spec` (start-up, after a reload)."""
        if self.cache is not None:
            self.cache.build(spec, table)

    def encode(
        self, model: RankerModel, user_id: str, user: dict[str, Any] | None, items: TrackFeatures
    ) -> dict[str, np.ndarray]:
        return model.spec.encode_packed(build_frame(model.spec, user_id, user, items))

    def __call__(
        self, model: RankerModel, user_id: str, user: dict[str, Any] | None, items: TrackFeatures
    ) -> np.ndarray:
        if len(items) == 0:
            return np.zeros(0, dtype=np.float32)
        items = model.own_content(items)  # rows of other codebooks: without audio (no pre-encoded rows then)
        packed = self.cache.packed(model.spec, user_id, user, items) if self.cache is not None else None
        if packed is None:
            packed = self.encode(model, user_id, user, items)
        return model.score(packed)


class Order:
    """Top-k by score, or by a query's steering (services/ranker/steer.py) when there is one; ties keep the score
    order, then retrieval order (stable sorts), so answers are deterministic."""

    def __call__(
        self,
        candidates: Candidates,
        items: TrackFeatures,
        scores: np.ndarray,
        k: int,
        steering: Steering | None = None,
        played: TrackFeatures | None = None,
    ) -> list[RankedItem]:
        if steering is None:
            top = self.rows(candidates, items, scores, played)[:k].tolist()
        else:  # lexsort: the last key is the primary one
            top = np.lexsort((-scores, -steering.order_by))[:k].tolist()
        alike = sounds_like(items, top, played) if played is not None else {}
        return self.items(candidates, items, scores, top, steering.matches if steering is not None else None, alike)

    @staticmethod
    def rows(
        candidates: Candidates, items: TrackFeatures, scores: np.ndarray, played: TrackFeatures | None
    ) -> np.ndarray:
        """Every row, best first: by score; a fold-in's by score and by how close they sound to the listener's plays
        (services/ranker/foldin.py): the model's score is the same for every listener it does not know."""
        if candidates.source != FOLDIN_SOURCE or played is None:
            return np.argsort(-scores, kind="stable")
        cold = np.fromiter((candidates.cold.get(t, False) for t in items.track_ids), dtype=bool, count=len(scores))
        return foldin_order(scores, content_closeness(items, played), cold)

    @staticmethod
    def items(
        candidates: Candidates,
        items: TrackFeatures,
        scores: np.ndarray,
        top: list[int],
        matches: np.ndarray | None,
        alike: dict[int, str],
    ) -> list[RankedItem]:
        """The answer's items for rows `top`, in that order (each field gathered once for the k rows)."""
        fields = ("genre", "tags", "artist_id", "release_year")
        genres, tags, artists, years = (items.values(name, top) for name in fields)
        ranked = []
        for n, i in enumerate(top):
            track_id = items.track_ids[i]
            cold = candidates.cold.get(track_id, False)
            match = None if matches is None or np.isnan(matches[i]) else round(float(matches[i]), 4)
            ranked.append(
                RankedItem(
                    track_id=track_id,
                    score=float(scores[i]),
                    rank=n + 1,
                    artist_id=artists[n],
                    genre=genres[n],
                    release_year=years[n],
                    cold=cold,
                    reason=reason_for(cold=cold, genre=genres[n], tags=tags[n], like=alike.get(i)),
                    tags=sound_tags(tags[n]),
                    query_match=match,
                )
            )
        return ranked


# --- the pipeline --------------------------------------------------------------------------------------


class Ranker:
    """user features >> retrieve >> item features >> score >> steer (with a query) >> order, over `holder`'s bundle."""

    def __init__(
        self,
        holder: BundleHolder[RankerModel],
        user_features: UserFeatures,
        retrieve: Retrieve | RetrieveInProcess,
        item_features: ItemFeatures,
        n_candidates: int,
        metrics: RankerMetrics | None = None,
        recent: RecentActivity | None = None,
        foldin_candidates: int = 50,
        item_cache_dir: Path | None = None,
        steer: Steer | None = None,
    ):
        self.foldin_candidates = foldin_candidates
        self.holder = holder
        self.recent = recent  # real-time events (RecentActivity); None: not read
        self.user_features, self.retrieve, self.item_features = user_features, retrieve, item_features
        self.score = Score(ItemInputCache(item_cache_dir))
        self.order = Order()
        self.steer = steer  # free-text queries; None: every query is refused
        self.n_candidates = n_candidates
        self.metrics = metrics or RankerMetrics.register(CollectorRegistry())

    def load(self) -> None:
        """Open every step's resources (bundle loading is the holder's job)."""
        self.user_features.load()
        self.retrieve.load()
        self.item_features.load()
        if self.steer is not None:
            self.steer.load()

    def reload(self, path: Path) -> tuple[str, str | None]:
        """Swap in the bundle at `path`, the in-process retriever's part first: a refusal there leaves both on the
        old bundle. A ranker part refused after it leaves new candidates with the old model, as the two services
        are during a rollout. Returns (new id, previous id); BundleError when refused."""
        self.retrieve.reload(path)
        return reload_bundle(self.holder, path)

    def prepare(self) -> None:
        """Encode the item inputs of every table row for the serving bundle (start-up, after a reload).

        Then moves what start-up or the reload left in memory out of the GC's generations, so full
        collections do not walk it on the hot path (the p99 spikes in DESIGN section 3).
        """
        if self.holder.loaded:
            spec = self.holder.state.spec
            self.score.prepare(spec, self.item_features.table)
            if self.recent is None and uses_activity(spec):  # served as 0 for every listener: not what it trained on
                log.warning("bundle %s reads recent-event features or content_affinity, but events are not read "
                            "(ENCORE_RANKER_READ_EVENTS=false): every listener is scored as without events",
                            self.holder.state.bundle_id)  # fmt: skip
        gc.collect()
        gc.freeze()

    async def close(self) -> None:
        await self.retrieve.close()

    async def recommend(self, user_id: str, k: int, query: str | None = None) -> Recommendation:
        model = self.holder.state  # one bundle for the whole request, even if a reload swaps it meanwhile
        clock = _StageClock(self.metrics.stage_seconds)
        similarity = await self.query_similarity(query)  # first: a refused query costs no store read
        clock.lap("query")

        user, recent, activity_degraded = await self.user_rows(user_id)
        clock.lap("user_features")
        candidates = await self.retrieve(user_id, max(self.n_candidates, k), model.popularity, recent)
        if candidates.source == FOLDIN_SOURCE:  # the fold-in's order is the only personal signal (RecentActivity)
            candidates = candidates.head(max(k, self.foldin_candidates))
        clock.lap("retrieve")
        items = await self.item_features(candidates.track_ids)
        references = played_tracks(recent.played, candidates.history)
        played = (await self.item_features(references)).features if references else None  # table rows: cheap
        clock.lap("item_features")
        profile = recent.user_row(user.profile) if uses_activity(model.spec) else user.profile
        scores = self.score(model, user_id, profile, items.features)
        clock.lap("score")
        steering = None
        if similarity is not None and self.steer is not None:
            tags = items.features.values("tags", range(len(items.features)))
            steering = self.steer(similarity, tags, scores)
        ranked = self.order(candidates, items.features, scores, k, steering, played)
        clock.lap("order")

        degraded = (user.degraded, activity_degraded, candidates.degraded_reason, items.degraded)
        reasons = [r for r in degraded if r]
        for reason in reasons:
            self.metrics.degraded.labels(reason.split(":", 1)[0]).inc()
        return Recommendation(user_id, model.bundle_id, model.model_name, candidates.source, ranked, reasons)

    async def user_rows(self, user_id: str) -> tuple[UserRow, Recent, str | None]:
        """The listener's profile (through its cache) and recent events in one store read: one worker-thread hop
        and one round trip (0.2 ms here, against 0.55 ms for two concurrent reads). When the store could not be
        read, each falls back on its own (UserFeatures.unavailable, RecentActivity.unavailable); recent events
        that cannot be had are none, and the third value says why (the answer is then served without the
        recent filter and fold-in)."""
        users, recent = self.user_features, self.recent
        cached = users.fresh(user_id)
        views = [*([fn.USER_PROFILE] if cached is None else []), *([fn.USER_ACTIVITY] if recent is not None else [])]
        if not views:  # a cached profile, and events not read (ENCORE_RANKER_READ_EVENTS=false)
            return cached or UserRow(None), NO_RECENT, None
        try:
            rows = await users.guard.read(users.store.get_user_views, [user_id], views)
        except Exception as error:
            user = cached if cached is not None else users.unavailable(user_id, error)
            if recent is None:
                return user, NO_RECENT, None
            try:
                return user, recent.unavailable(user_id, error), None
            except Exception:
                return user, NO_RECENT, f"activity store unavailable: {type(error).__name__}: {error}"
        user = cached if cached is not None else users.remember(user_id, rows[fn.USER_PROFILE].get(user_id))
        events = recent.remember(user_id, rows[fn.USER_ACTIVITY].get(user_id)) if recent is not None else NO_RECENT
        return user, events, None

    async def query_similarity(self, query: str | None) -> dict[str, float] | None:
        if query is None:
            return None
        if self.steer is None:
            raise ServiceError(422, "query_unavailable", "free-text queries are not enabled in this ranker")
        return await self.steer.similarity(query)


class _StageClock:
    """Observes the time since the previous lap under a stage name."""

    def __init__(self, histogram: Histogram):
        self.histogram = histogram
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.histogram.labels(stage).observe(now - self.last)
        self.last = now
