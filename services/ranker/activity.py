"""A listener's recent events (user_activity, pushed by POST /events) for one request: never cached.

The profile cache (UserFeatures, 60 s) holds training-time profiles only; this step reads the real-time row on
every request, so an event acknowledged by the embedder reaches the next /recommend (one online read, ~1 ms).

Rules (docs/events.md):
- every track in the listener's recent window (the last ENCORE_EMBEDDER_EVENTS_RECENT_N events, whatever their type) is
  filtered out of the answer: played, skipped, liked and disliked tracks alike;
- the tracks of play and like events in that window, unless a later skip or dislike of the same track followed,
  are "played": for a listener the bundle does not know, the retriever folds them in (mean of their vectors) and
  answers with candidate_source "foldin";
- the ranker's model cannot personalize a listener it was not trained on (their id and profile are unknown to it:
  its score is the same for every such listener), so for "foldin" it orders only the fold-in's first
  ENCORE_RANKER_FOLDIN_CANDIDATES (default 50) candidates: the retriever picks what suits the listener, the model
  orders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from encore.store import Store

POSITIVE_TYPES = frozenset({"play", "like"})
FOLDIN_SOURCE = "foldin"  # the retriever's candidate_source for a fold-in (services/retriever/search.py)


@dataclass(frozen=True)
class Recent:
    exclude: list[str]  # every recent track, newest first
    played: list[str]  # recent tracks whose latest event was a play or a like, newest first

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> Recent:
        if not row or not row.get("recent_tracks"):
            return cls([], [])
        tracks, types = row["recent_tracks"], row.get("recent_types") or []
        latest: dict[str, str] = {}
        for track, kind in zip(tracks, types, strict=False):  # newest first: the first type seen is the latest
            latest.setdefault(track, kind)
        return cls(list(latest), [t for t, kind in latest.items() if kind in POSITIVE_TYPES])


NO_RECENT = Recent([], [])


class RecentActivity:
    """user_id -> Recent, read through the ranker's StoreGuard (fails fast while the store is down).

    Read on every request. The last answer per user is kept only as a fallback: while the store is down, a user
    read before is served their last known recent tracks (like the profile cache serves a stale profile); a user
    never read raises, and the ranker answers degraded, without the filter and the fold-in.
    """

    def __init__(self, store: Store, guard: Any, max_entries: int = 100_000):
        self.store, self.guard, self.max_entries = store, guard, max_entries
        self._last: dict[str, Recent] = {}

    async def __call__(self, user_id: str) -> Recent:
        try:
            rows = await self.guard.read(self.store.get_activity, [user_id])
        except Exception:
            if user_id in self._last:
                return self._last[user_id]
            raise
        row = rows.get(user_id)
        recent = Recent.from_row(row) if row else NO_RECENT  # most users have no events: one shared object
        if len(self._last) >= self.max_entries and user_id not in self._last:
            self._last.pop(next(iter(self._last)))  # the oldest insertion
        self._last[user_id] = recent
        return recent
