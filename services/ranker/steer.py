"""Free-text steering of `GET /recommend?q=...` through MusiCNN's tag space (docs/listening_room.md).

The rule, applied to the n candidates after the CTR model scored them:
1. the query's match to a track is the mean cosine similarity between the query's MiniLM vector and the
   vectors of the track's top tags (both heads, each distinct name once); a track without tags matches least;
2. both orders become rank scores in [0, 1] (1 = first of n): p_ctr by click probability, p_q by match;
3. candidates are ordered by (1 - w) * p_ctr + w * p_q, with w = ENCORE_RANKER_QUERY_WEIGHT; ties keep the CTR
   order. Ranks, not raw values: a cosine and a probability have no common scale, and ranks need no calibration.
The answer's `score` stays the click probability. An unknown user is steered the same way: the model's
popularity-like scores for an unseen user take the place of personal ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from encore.audio.encoder import parse_tags
from encore.text_query import QueryEncoder, QueryEncoderUnavailable, tag_key
from services.common.errors import ServiceError

log = logging.getLogger("encore.ranker")


class Steering(NamedTuple):
    """What Steer gives: the order to rank by (higher first) and each candidate's match to the query."""

    order_by: np.ndarray  # (n,) float
    matches: np.ndarray  # (n,) float, NaN where the track has no tags


def rank_scores(values: np.ndarray) -> np.ndarray:
    """(n,) -> (n,) in [0, 1]: 1 for the largest value, 0 for the smallest; ties and NaN by position (stable)."""
    n = len(values)
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.arange(n)
    return 1.0 - ranks / max(n - 1, 1)


def tag_matches(similarity: dict[str, float], tags: Sequence[str | None]) -> np.ndarray:
    """(n,) mean similarity of each track's distinct tag names to the query; NaN for a track with none known."""
    matches = np.full(len(tags), np.nan)
    for i, text in enumerate(tags):
        names = {tag_key(t) for head in parse_tags(text).values() for t in head} & similarity.keys()
        if names:
            matches[i] = float(np.mean([similarity[n] for n in names]))
    return matches


class Steer:
    """(query, candidates' tags, CTR scores) -> Steering. Opens the query encoder in `load()`; without it a
    query is refused (422 query_unavailable) and answers without one are unchanged."""

    def __init__(self, folder: Path, weight: float, threads: int = 1):
        self.folder, self.weight, self.threads = folder, weight, threads
        self.encoder: QueryEncoder | None = None
        self.unavailable = "not loaded"

    def load(self) -> None:
        try:
            self.encoder = QueryEncoder(self.folder, self.threads)
        except QueryEncoderUnavailable as error:  # serve without steering; a query says why
            self.unavailable = str(error)
            log.warning("free-text queries (q) are off: %s", error)

    async def similarity(self, query: str) -> dict[str, float]:
        """tag name -> similarity to the query; refuses an empty query, or any query without the encoder."""
        if not query.strip():
            raise ServiceError(422, "invalid_request", "q is blank: give a few words, or leave q out")
        if self.encoder is None:
            raise ServiceError(422, "query_unavailable", f"free-text queries are off here: {self.unavailable}")
        return await asyncio.to_thread(self.encoder.tag_similarities, query)  # ~10 ms of CPU off the event loop

    def __call__(self, similarity: dict[str, float], tags: Sequence[str | None], scores: np.ndarray) -> Steering:
        matches = tag_matches(similarity, tags)
        blended = (1 - self.weight) * rank_scores(scores) + self.weight * rank_scores(matches)
        return Steering(blended, matches)
