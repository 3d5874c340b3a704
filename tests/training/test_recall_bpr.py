"""BPR recall training: ranking quality on held-out plays, the cold projection, and the bundle files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from encore.artifacts import SAFE_SUFFIXES, BundleBuilder, load_bundle
from encore.errors import EncoreError
from encore.retriever_bundle import RetrieverComponent
from tests.services.retriever.planted import ENCODER, Planted, make_planted
from training.models.recall import BPR
from training.train_recall import (
    RecallArtifacts,
    content_from_frame,
    fit_projection,
    train_bpr,
)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return make_planted(seed=1)


@pytest.fixture(scope="module")
def trained(planted: Planted) -> RecallArtifacts:
    return train_bpr(planted.interactions, planted.content_dict(), encoder=ENCODER, dim=32, epochs=20, seed=3)


def test_bpr_ranks_held_out_plays_far_above_random_and_popularity(trained: RecallArtifacts) -> None:
    m = trained.metrics
    assert m["recall@20"] > 5 * m["random_recall@20"]
    assert m["recall@20"] > 1.5 * m["popularity_recall@20"]
    assert 0 < m["ndcg@20"] <= 1


def test_projection_ranks_held_out_items_above_random(trained: RecallArtifacts) -> None:
    m = trained.metrics
    assert trained.data["cold_items"] >= 30
    assert m["cold_recall@20"] > 1.8 * m["cold_random_recall@20"]


def test_cold_items_and_statistics_come_from_training_only(planted: Planted, trained: RecallArtifacts) -> None:
    plays = planted.interactions
    cold = set(plays.track_id) - set(trained.item_ids)
    assert len(cold) == trained.data["cold_items"]
    train_rows = [planted.track_ids.index(t) for t in trained.item_ids]
    assert trained.projection is not None
    np.testing.assert_allclose(trained.projection.mean, planted.content[train_rows].mean(0), rtol=1e-5, atol=1e-5)
    # Popularity counts training plays only, so it never exceeds the full count.
    full = plays.groupby("track_id").size().reindex(trained.item_ids).to_numpy()
    assert (trained.popularity <= full).all() and trained.popularity.sum() == trained.data["train_plays"]


def test_seen_holds_the_training_plays_and_leaves_test_plays_out(planted: Planted, trained: RecallArtifacts) -> None:
    """Serving masks what the model learned from; test plays stay candidates so serving reproduces the metrics."""
    items = set(trained.item_ids)
    known = planted.interactions[planted.interactions.track_id.isin(items)].groupby("user_id").track_id.agg(set)
    n_seen = 0
    for row, user in enumerate(trained.user_ids):
        got = {
            trained.item_ids[i] for i in trained.seen_indices[trained.seen_indptr[row] : trained.seen_indptr[row + 1]]
        }
        assert got <= known[user]
        n_seen += len(got)
    assert n_seen == trained.data["train_plays"] and trained.data["test_plays"] > 0


def test_bundle_files_are_safe_and_round_trip(tmp_path: Path, trained: RecallArtifacts) -> None:
    with BundleBuilder(tmp_path, "r1") as builder:
        entry = trained.component().write(builder)
    bundle = load_bundle(tmp_path / "r1")
    assert bundle.components["retriever"]["model"] == "BPR"
    assert entry["dim"] == 33 and entry["n_items"] == len(trained.item_ids) and entry["encoder"] == ENCODER
    assert entry["metrics"]["recall@20"] == trained.metrics["recall@20"]
    files = [p for p in (tmp_path / "r1" / "retriever").iterdir()]
    assert {p.suffix for p in files} <= SAFE_SUFFIXES
    served = RetrieverComponent.read(bundle)
    np.testing.assert_array_equal(served.item_vectors, trained.item_vectors)
    np.testing.assert_array_equal(served.user_vectors, trained.user_vectors)
    assert served.item_ids.tolist() == trained.item_ids.tolist()
    assert served.user_ids.tolist() == trained.user_ids.tolist()
    np.testing.assert_array_equal(served.seen_indices, trained.seen_indices)
    np.testing.assert_array_equal(served.popularity, trained.popularity)
    assert served.details["config"]["dim"] == 32 and served.projection is not None
    assert served.projection.method == "ridge" and served.projection.encoder == ENCODER


def test_exported_vectors_give_the_model_scores() -> None:
    torch.manual_seed(0)
    model = BPR(5, 7, dim=4)
    torch.nn.init.normal_(model.item_bias.weight)
    users, items = model.export()
    u, i = torch.tensor([0, 3, 4]), torch.tensor([6, 0, 2])
    np.testing.assert_allclose(model(u, i).detach().numpy(), (users[u] * items[i]).sum(-1), rtol=1e-6)


def test_bad_inputs_fail_loudly(planted: Planted) -> None:
    with pytest.raises(EncoreError, match="encoder"):
        train_bpr(planted.interactions, planted.content_dict(), epochs=1)
    with pytest.raises(EncoreError, match="missing columns"):
        train_bpr(pd.DataFrame({"user": ["u"], "track_id": ["t"]}), epochs=1)
    with pytest.raises(EncoreError, match="NaN"):
        train_bpr(planted.interactions, {"t00000": [np.nan, 1.0]}, encoder=ENCODER, epochs=1)


def test_content_from_frame_refuses_mixed_encoders(planted: Planted) -> None:
    frame = pd.DataFrame({"track_id": planted.track_ids[:3], "embedding": list(planted.content[:3]), **ENCODER})
    (ids, matrix), encoder = content_from_frame(frame)
    assert ids == planted.track_ids[:3] and matrix.shape == (3, 16) and encoder == ENCODER
    frame.loc[2, "encoder_revision"] = "other"
    with pytest.raises(EncoreError, match="mixes 2 encoder"):
        content_from_frame(frame)


def test_projection_is_ridge_on_standardized_content() -> None:
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    content = rng.normal(3.0, 2.0, (200, 6)).astype(np.float32)
    targets = content @ rng.normal(size=(6, 4)) + rng.normal(0, 0.1, (200, 4))
    projection = fit_projection(content, targets.astype(np.float32), ENCODER, (5.0,), seed=0)
    x = (content - content.mean(0)) / content.std(0)
    reference = Ridge(alpha=5.0).fit(x, targets)
    np.testing.assert_allclose(projection.weight, reference.coef_.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(projection.apply(content), reference.predict(x), rtol=1e-4, atol=1e-3)
    assert projection.cv_r2 > 0.9


def test_without_holdouts_every_play_trains(planted: Planted) -> None:
    full = train_bpr(
        planted.interactions, planted.content_dict(), encoder=ENCODER, epochs=1, test_fraction=0, cold_item_fraction=0
    )
    assert set(full.item_ids) == set(planted.interactions.track_id)
    assert full.data["train_plays"] == len(planted.interactions.drop_duplicates())
    assert "recall@20" not in full.metrics and "cold_recall@20" not in full.metrics
