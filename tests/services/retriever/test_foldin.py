"""Fold-in: a listener the bundle does not know gets candidates from the vectors of the tracks they played."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.retriever.search import FOLDIN_SOURCE, Retriever
from tests.services.retriever.planted import Planted


@pytest.fixture
def retriever(artifacts_root: Path) -> Retriever:
    retriever = Retriever()
    retriever.reload(artifacts_root / "b1")
    return retriever


def test_played_tracks_of_one_taste_bring_candidates_of_that_taste(planted: Planted, retriever: Retriever) -> None:
    index = retriever.index
    shares = []
    for cluster in range(int(planted.item_cluster.max()) + 1):
        members = [t for t, c in zip(planted.track_ids, planted.item_cluster, strict=True) if c == cluster]
        played = [t for t in members if t in index.item_index][:3]
        found = retriever.candidates("a-new-listener", 20, played=played)
        assert not found.known_user and found.source == FOLDIN_SOURCE
        ids = [c.track_id for c in found.candidates]
        assert len(ids) == 20 and not set(ids) & set(played)
        clusters = planted.item_cluster[[planted.track_ids.index(t) for t in ids]]
        shares.append(np.mean(clusters == cluster))
    base = 1 / (planted.item_cluster.max() + 1)
    assert np.mean(shares) > 3 * base  # a popularity list holds each taste at about its base rate


def test_excluded_tracks_never_come_back(retriever: Retriever) -> None:
    popular = [c.track_id for c in retriever.candidates("stranger", 10).candidates]
    found = retriever.candidates("stranger", 10, exclude=popular[:4])
    assert found.source == "popularity"
    assert [c.track_id for c in found.candidates][:6] == popular[4:]
    known = next(iter(retriever.index.user_index))
    top = [c.track_id for c in retriever.candidates(known, 10).candidates]
    assert not set(top[:3]) & {c.track_id for c in retriever.candidates(known, 10, exclude=top[:3]).candidates}


def test_tracks_the_bundle_does_not_hold_give_no_fold_in(retriever: Retriever) -> None:
    found = retriever.candidates("stranger", 5, played=["no-such-track"])
    assert found.source == "popularity"
