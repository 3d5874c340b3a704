"""The retriever's logic without HTTP: top-k, seen filter, popularity fallback, cold tracks, reloads."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from encore.artifacts import BundleError
from encore.retriever_bundle import RetrieverComponent
from encore.store import Store
from services.retriever.search import ColdItemRefused, Retriever, SearchOptions, top_k
from tests.services.retriever.conftest import corrupt, write_bundle
from tests.services.retriever.planted import ENCODER, Planted
from training.train_recall import RecallArtifacts


@pytest.fixture
def retriever(artifacts_root: Path) -> Retriever:
    retriever = Retriever(SearchOptions(foldin_prior=0))  # the models' own vectors; the blend: test_foldin.py
    retriever.reload(artifacts_root / "b1")
    return retriever


def _single_taste_users(planted: Planted, retriever: Retriever) -> list[str]:
    index = retriever.index
    return [u for u, c in planted.user_clusters.items() if len(c) == 1 and u in index.user_index]


def test_known_user_gets_unplayed_items_of_their_taste(planted: Planted, retriever: Retriever) -> None:
    index = retriever.index
    in_taste = []
    for user in list(index.user_index)[:60]:
        found = retriever.candidates(user, 20)
        assert found.known_user and found.source == "bpr" and len(found.candidates) == 20
        ids = [c.track_id for c in found.candidates]
        trained_on = {index.item_ids[i] for i in index.seen(index.user_index[user])}
        assert trained_on and not set(ids) & trained_on  # plays the model learned from are never candidates
        scores = [c.score for c in found.candidates]
        assert scores == sorted(scores, reverse=True)
        clusters = planted.item_cluster[[planted.track_ids.index(t) for t in ids]]
        in_taste.append(np.isin(clusters, list(planted.user_clusters[user])).mean())
    assert np.mean(in_taste) > 0.6  # a random list would be ~0.19 (1.5 of 8 clusters)


def test_scores_are_exact_dot_products(trained: RecallArtifacts, retriever: Retriever) -> None:
    user = str(trained.user_ids[5])
    found = retriever.candidates(user, 10)
    all_scores = trained.item_vectors @ trained.user_vectors[5]
    seen = trained.seen_indices[trained.seen_indptr[5] : trained.seen_indptr[6]]
    all_scores[seen] = -np.inf
    best = np.argsort(-all_scores)[:10]
    assert [c.track_id for c in found.candidates] == trained.item_ids[best].tolist()
    np.testing.assert_allclose([c.score for c in found.candidates], all_scores[best], rtol=1e-5)


def test_unknown_user_gets_popularity_order(trained: RecallArtifacts, retriever: Retriever) -> None:
    found = retriever.candidates("never-seen-user", 15)
    assert not found.known_user and found.source == "popularity"
    expected = trained.item_ids[np.argsort(-trained.popularity, kind="stable")[:15]].tolist()
    assert [c.track_id for c in found.candidates] == expected
    assert [c.score for c in found.candidates] == sorted(trained.popularity, reverse=True)[:15]


def test_k_beyond_the_catalogue_returns_every_unplayed_item(trained: RecallArtifacts, retriever: Retriever) -> None:
    n_seen = int(trained.seen_indptr[1] - trained.seen_indptr[0])
    found = retriever.candidates(str(trained.user_ids[0]), 10_000)
    assert len(found.candidates) == len(trained.item_ids) - n_seen
    assert len(retriever.candidates("nobody", 10_000).candidates) == len(trained.item_ids)


def test_serving_projection_equals_training_projection(trained: RecallArtifacts, retriever: Retriever) -> None:
    content = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    assert trained.projection is not None and retriever.index.projection is not None
    np.testing.assert_array_equal(retriever.index.projection.apply(content), trained.projection.apply(content))


def test_cold_track_competes_for_users_whose_taste_matches(planted: Planted, artifacts_root: Path) -> None:
    retriever = Retriever(SearchOptions(cold_share=0))  # raw scores only: no places kept for new tracks
    retriever.reload(artifacts_root / "b1")
    users = _single_taste_users(planted, retriever)
    cluster = next(iter(planted.user_clusters[users[0]]))
    fan = users[0]
    stranger = next(u for u in users if cluster not in planted.user_clusters[u])
    assert retriever.add_item("upload-1", planted.centroids[cluster].tolist(), **ENCODER) == "added"
    fan_ids = {c.track_id: c.cold for c in retriever.candidates(fan, 100).candidates}
    assert fan_ids.get("upload-1") is True
    assert "upload-1" not in {c.track_id for c in retriever.candidates(stranger, 100).candidates}
    assert retriever.add_item("upload-1", planted.centroids[cluster].tolist(), **ENCODER) == "replaced"
    assert len(retriever.index.cold) == 1


def test_new_tracks_keep_a_share_of_every_known_users_candidates(planted: Planted, artifacts_root: Path) -> None:
    """cold_share of k goes to the listener's best-matching new tracks, whatever their raw scores."""
    retriever = Retriever(SearchOptions(cold_share=0.1))
    retriever.reload(artifacts_root / "b1")
    users = _single_taste_users(planted, retriever)
    clusters = sorted({c for u in users for c in planted.user_clusters[u]})
    for i, cluster in enumerate(clusters[:3]):
        # Far weaker than any trained item, so no new track would make a top-20 on its raw score.
        assert retriever.add_item(f"upload-{i}", (0.01 * planted.centroids[cluster]).tolist(), **ENCODER) == "added"
    fan = next(u for u in users if planted.user_clusters[u] == {clusters[0]})
    for user in users[:20]:
        found = retriever.candidates(user, 20).candidates
        assert len(found) == 20
        assert sum(c.cold for c in found) == 2  # ceil(0.1 * 20)
        scores = [c.score for c in found]
        assert scores == sorted(scores, reverse=True)
    fan_cold = [c.track_id for c in retriever.candidates(fan, 20).candidates if c.cold]
    assert "upload-0" in fan_cold  # the fan's best-matching new track is among the two kept


def test_new_content_that_does_not_fit_is_refused(planted: Planted, retriever: Retriever) -> None:
    good = planted.centroids[0].tolist()
    with pytest.raises(ColdItemRefused, match="length 15"):
        retriever.add_item("x", good[:-1], **ENCODER)
    with pytest.raises(ColdItemRefused, match="cannot be mixed"):
        retriever.add_item("x", good, encoder="clap", encoder_revision=ENCODER["encoder_revision"])
    with pytest.raises(ColdItemRefused, match="cannot be mixed"):
        retriever.add_item("x", good, encoder="mfcc", encoder_revision="other")
    with pytest.raises(ColdItemRefused, match="NaN"):
        retriever.add_item("x", [float("nan"), *good[1:]], **ENCODER)
    assert retriever.add_item(retriever.index.item_ids[0], good, **ENCODER) == "in_bundle"
    assert len(retriever.index.cold) == 0


def test_corrupt_bundle_is_refused_and_the_old_one_keeps_serving(
    artifacts_root: Path, trained: RecallArtifacts, retriever: Retriever
) -> None:
    user = str(trained.user_ids[3])
    before = retriever.candidates(user, 20)
    bad = write_bundle(artifacts_root, "b2", trained, make_current=False)
    vectors = f"{RetrieverComponent.NAME}/{RetrieverComponent.VECTORS['item']}"
    corrupt(bad / vectors)
    with pytest.raises(BundleError, match=f"{vectors} is missing or does not match the manifest"):
        retriever.reload(bad)
    assert retriever.candidates(user, 20) == before


def test_reload_reprojects_cold_tracks_and_drops_trained_ones(
    planted: Planted, artifacts_root: Path, trained: RecallArtifacts, retriever: Retriever
) -> None:
    retriever.add_item("upload-2", planted.centroids[1].tolist(), **ENCODER)
    retriever.reload(write_bundle(artifacts_root, "b3", trained))
    assert retriever.index.bundle_id == "b3" and retriever.index.cold.ids == ("upload-2",)
    # A later bundle that trained on the track serves its trained vector instead.
    grown = RecallArtifacts(**{**vars(trained), "item_ids": np.array([*trained.item_ids[:-1], "upload-2"])})
    retriever.reload(write_bundle(artifacts_root, "b4", grown))
    assert len(retriever.index.cold) == 0 and "upload-2" in retriever.index.item_index


def test_pick_up_reads_tracks_pushed_since_the_bundle(planted: Planted, retriever: Retriever, store: Store) -> None:
    fresh, foreign = f"pushed-{uuid.uuid4().hex[:8]}", f"foreign-{uuid.uuid4().hex[:8]}"
    content = {"tokens": [1, 2, 3], "typicality": 0.5, "tags": "", **ENCODER}
    store.push_track(fresh, None, {**content, "embedding": planted.centroids[2].astype(np.float32)})
    store.push_track(
        foreign, None, {**content, "embedding": planted.centroids[2].astype(np.float32), "encoder": "clap"}
    )
    assert retriever.pick_up(store) >= 1
    cold = retriever.index.cold
    assert fresh in cold.index and foreign not in cold.index  # never mix encoders
    assert retriever.pick_up(store) == 0  # nothing new: no second read


def test_ivf_index_with_every_cell_probed_returns_the_exact_candidates(
    artifacts_root: Path, planted: Planted, trained: RecallArtifacts
) -> None:
    exact = Retriever(SearchOptions(index="exact"))
    exact.reload(artifacts_root / "b1")
    ivf = Retriever(SearchOptions(index="ivf", ivf_nlist=8, ivf_nprobe=8))  # all cells: an exhaustive search
    ivf.reload(artifacts_root / "b1")
    assert exact.index.ivf is None and ivf.index.ivf is not None and ivf.index.ivf.nlist == 8
    for retriever in (exact, ivf):
        retriever.add_item("upload-ivf", planted.centroids[2].tolist(), **ENCODER)
    for user in trained.user_ids[:40].tolist():
        want, got = exact.candidates(user, 60).candidates, ivf.candidates(user, 60).candidates
        assert [c.track_id for c in got] == [c.track_id for c in want]
        np.testing.assert_allclose([c.score for c in got], [c.score for c in want], rtol=1e-4, atol=1e-5)
    assert any(c.cold for u in trained.user_ids[:40].tolist() for c in ivf.candidates(u, 60).candidates)


def test_auto_index_switches_to_ivf_at_the_configured_size(artifacts_root: Path, trained: RecallArtifacts) -> None:
    small = Retriever(SearchOptions(index="auto", ivf_min_items=len(trained.item_ids) + 1))
    small.reload(artifacts_root / "b1")
    large = Retriever(SearchOptions(index="auto", ivf_min_items=len(trained.item_ids), ivf_nlist=4, ivf_nprobe=2))
    large.reload(artifacts_root / "b1")
    assert small.index.ivf is None and large.index.ivf is not None
    found = large.candidates(str(trained.user_ids[0]), 30).candidates
    seen = {trained.item_ids[i] for i in trained.seen_indices[trained.seen_indptr[0] : trained.seen_indptr[1]]}
    assert len(found) == 30 and not {c.track_id for c in found} & seen


def test_a_service_pinned_to_a_model_refuses_bundles_of_another(artifacts_root: Path) -> None:
    pinned = Retriever(SearchOptions(model="FREEDOM"))
    with pytest.raises(BundleError, match="holds a BPR retriever, but this service is set to serve FREEDOM"):
        pinned.reload(artifacts_root / "b1")
    assert not pinned.loaded
    assert Retriever(SearchOptions(model="bpr")).reload(artifacts_root / "b1").id == "b1"


def test_ivf_nprobe_is_raised_at_load_until_sampled_recall_reaches_the_target(artifacts_root: Path) -> None:
    calibrated = Retriever(SearchOptions(index="ivf", ivf_nlist=16, ivf_nprobe=1, ivf_target_recall=0.99))
    calibrated.reload(artifacts_root / "b1")
    assert calibrated.index.ivf.nprobe > 1 and calibrated.index.ivf_recall >= 0.99
    unchecked = Retriever(SearchOptions(index="ivf", ivf_nlist=16, ivf_nprobe=1, ivf_target_recall=0))
    unchecked.reload(artifacts_root / "b1")
    assert unchecked.index.ivf.nprobe == 1 and unchecked.index.ivf_recall is None


def test_top_k_matches_a_full_stable_sort() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000).astype(np.float32)
    scores[[10, 20]] = scores.max() + 1  # a tie at the top: the lower index first
    full = np.argsort(-scores, kind="stable")
    for k in (1, 2, 7, 999, 1000, 5000):
        np.testing.assert_array_equal(top_k(scores, k), full[:k])
