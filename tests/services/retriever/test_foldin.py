"""Fold-in: a listener the bundle does not know gets candidates from the vectors of the tracks they played."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.retriever.search import FOLDIN_SOURCE, Retriever, SearchOptions
from tests.services.retriever.conftest import write_bundle
from tests.services.retriever.planted import ENCODER, Planted
from training.train_recall import RecallArtifacts, train_bpr


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


def test_a_listener_trained_on_a_few_plays_keeps_fold_ins_taste(planted: Planted, tmp_path: Path) -> None:
    """After a retrain, a newcomer with 3 plays of one genre has a weak trained vector; blended with the fold-in
    of those plays (foldin_prior) their candidates stay in that genre. Without the blend (prior 0) they drift."""
    rng = np.random.default_rng(5)
    newcomers, rows = {}, []
    for n in range(40):
        genre = int(rng.integers(0, planted.item_cluster.max() + 1))
        members = [t for t, c in zip(planted.track_ids, planted.item_cluster, strict=True) if c == genre]
        newcomers[f"newcomer-{n}"] = genre
        rows += [(f"newcomer-{n}", t) for t in rng.choice(members, 3, replace=False)]
    plays = pd.concat([planted.interactions, pd.DataFrame(rows, columns=["user_id", "track_id"])], ignore_index=True)
    trained = train_bpr(plays, (planted.track_ids, planted.content), encoder=ENCODER, dim=32, epochs=20)
    write_bundle(tmp_path, "b1", trained)
    genre_of = dict(zip(planted.track_ids, planted.item_cluster.tolist(), strict=True))

    def in_genre_share(prior: float) -> float:
        retriever = Retriever(SearchOptions(foldin_prior=prior))
        retriever.reload(tmp_path / "b1")
        found = {user: retriever.candidates(user, 20) for user in newcomers}
        assert all(f.known_user and f.source == "bpr" for f in found.values())
        return float(np.mean([[genre_of[c.track_id] == newcomers[u] for c in f.candidates] for u, f in found.items()]))

    trained_only, blended = in_genre_share(0.0), in_genre_share(10.0)
    assert blended > 0.8 and blended > trained_only + 0.15


def test_the_blend_weighs_the_trained_vector_by_training_plays(trained: RecallArtifacts, artifacts_root: Path) -> None:
    retriever = Retriever(SearchOptions(foldin_prior=10.0, cold_share=0))
    retriever.reload(artifacts_root / "b1")
    seen = trained.seen_indices[trained.seen_indptr[5] : trained.seen_indptr[6]]
    user, folded = trained.user_vectors[5], trained.item_vectors[seen].mean(axis=0)
    weight = len(seen) / (len(seen) + 10.0)
    blended = weight * user + (1 - weight) * folded * np.linalg.norm(user) / np.linalg.norm(folded)
    found = retriever.candidates(str(trained.user_ids[5]), 10)
    scores = trained.item_vectors @ blended
    scores[seen] = -np.inf
    best = np.argsort(-scores)[:10]
    assert [c.track_id for c in found.candidates] == trained.item_ids[best].tolist()
    np.testing.assert_allclose([c.score for c in found.candidates], scores[best], rtol=1e-5)


def test_a_fold_in_listeners_new_track_ranks_go_to_the_uploads_closest_in_sound(
    planted: Planted, retriever: Retriever
) -> None:
    """A new listener who played two uploads: the ranks their candidates give to new tracks go to the uploads whose
    stored content is closest (cosine to the played uploads' mean unit vector), closest first; not to the best
    projected scores, which the ridge map's shrinking and mixing make a poor measure of sound."""
    rng = np.random.default_rng(3)
    for cluster, centroid in enumerate(planted.centroids):
        for j in range(4):
            content = centroid + rng.normal(0.0, 1.0, len(centroid))
            assert retriever.add_item(f"up-{cluster}-{j}", content.tolist(), **ENCODER) == "added"
    # The played genre's sound, quietly: the same direction (close in sound), a projected vector near the mean.
    retriever.add_item("quiet", (0.02 * planted.centroids[0]).tolist(), **ENCODER)
    played = ["up-0-0", "up-0-1"]
    found = retriever.candidates("a-new-listener", 20, played=played)
    assert found.source == FOLDIN_SOURCE
    cold = [c.track_id for c in found.candidates if c.cold]
    index, items = retriever.index, retriever.index.cold
    unit = items.content / np.linalg.norm(items.content, axis=1, keepdims=True)
    profile = unit[[items.index[t] for t in played]].mean(axis=0)
    unplayed = [t for t in items.ids if t not in played]
    by_sound = sorted(unplayed, key=lambda t: -float(unit[items.index[t]] @ profile))
    assert len(cold) >= 5 and cold == by_sound[: len(cold)]
    user = index.fold_in(played, items)
    by_projection = sorted(unplayed, key=lambda t: -float(items.vectors[items.index[t]] @ user))
    assert by_projection[: len(cold)] != cold  # what the projected scores alone would have chosen
