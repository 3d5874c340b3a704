"""The four recall models (BPR, VBPR, FREEDOM, LGMRec): they learn the planted taste, map content of unseen
items to item vectors, stop early on validation, and run with one or two content modalities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encore.artifacts import BundleBuilder, load_bundle
from encore.errors import EncoreError
from encore.retriever_bundle import RetrieverComponent
from tests.services.retriever.planted import ENCODER, Planted, make_planted
from training.models.recall import RECALL_MODELS, VBPR
from training.recall_metrics import rank_metrics
from training.train_recall import (
    RecallArtifacts,
    RecallConfig,
    RecallData,
    build_model,
    fit_recall,
    train_recall,
)

MODELS = list(RECALL_MODELS)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return make_planted(n_users=150, n_items=240, plays_per_user=24, seed=4)


def _train(planted: Planted, model: str, **overrides) -> RecallArtifacts:
    options = dict(
        encoder=ENCODER,
        model=model,
        dim=16,
        epochs=15,
        patience=15,
        valid_fraction=0.1,
        cold_item_fraction=0.3,
        batch_size=256,
        seed=2,
    )
    return train_recall(planted.interactions, planted.content_dict(), **{**options, **overrides})


@pytest.fixture(scope="module")
def trained(planted: Planted) -> dict[str, RecallArtifacts]:
    return {model: _train(planted, model) for model in MODELS}


@pytest.mark.parametrize("model", MODELS)
def test_model_ranks_held_out_plays_and_cold_items_above_chance(trained, model: str) -> None:
    m = trained[model].metrics
    for k in (10, 20):  # about 70 cold items: at k = 50 even a random ranking finds most
        assert m[f"recall@{k}"] > 2 * m[f"random_recall@{k}"], (model, k, m)
        assert m[f"cold_recall@{k}"] > 1.3 * m[f"cold_random_recall@{k}"], (model, k, m)
    assert all(0 <= m[f"{name}@20"] <= 1 for name in ("recall", "ndcg", "hit", "mrr", "precision"))
    assert m["hit@50"] >= m["hit@20"] >= m["hit@10"] and m["recall@50"] >= m["recall@20"]


@pytest.mark.parametrize("model", MODELS)
def test_best_validation_epoch_is_the_one_exported(trained, model: str) -> None:
    a = trained[model]
    valid = [h["valid_recall@20"] for h in a.history]
    assert a.metrics["best_epoch"] == int(np.argmax(valid)) + 1
    assert a.metrics["valid_recall@20"] == pytest.approx(max(valid), abs=1e-6)


def test_training_stops_after_patience_epochs_without_gain(planted: Planted) -> None:
    a = _train(planted, "BPR", epochs=200, patience=2, lr=0.05)
    assert len(a.history) < 200 and len(a.history) - a.metrics["best_epoch"] == 2


@pytest.mark.parametrize("model", MODELS)
def test_bundle_records_the_model_and_round_trips(tmp_path: Path, trained, model: str) -> None:
    a = trained[model]
    with BundleBuilder(tmp_path, "r") as builder:
        a.component().write(builder)
    bundle = load_bundle(tmp_path / "r")
    entry = bundle.components["retriever"]
    assert entry["model"] == model and entry["dim"] == a.item_vectors.shape[1]
    assert entry["projection"]["method"] == ("vbpr" if model == "VBPR" else "ridge")
    served = RetrieverComponent.read(bundle)  # what the retriever serves
    assert served.model == model and served.projection is not None
    assert served.projection.method == entry["projection"]["method"]
    content = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    np.testing.assert_allclose(served.projection.apply(content), a.projection.apply(content), rtol=1e-5, atol=1e-5)


def test_vbpr_content_half_of_a_cold_vector_is_the_models_own(planted: Planted) -> None:
    """VBPR needs no regression for the content half: applying the map to a trained item's content gives its
    trained content half exactly."""
    a = _train(planted, "VBPR", epochs=3)
    rows = [planted.track_ids.index(t) for t in a.item_ids]
    mapped = a.projection.apply(planted.content[rows])
    np.testing.assert_allclose(mapped[:, 16:], a.item_vectors[:, 16:], rtol=1e-4, atol=1e-4)


def _two_modality_data(planted: Planted) -> RecallData:
    plays = planted.interactions
    rng = np.random.default_rng(0)
    held = rng.random(len(plays)) < 0.15
    audio_present = rng.random(len(planted.track_ids)) < 0.6  # most items lack the second modality
    content = planted.content.copy()
    content[~audio_present, 8:] = 0.0
    modalities = [("text", slice(0, 8), np.ones(len(content), bool)), ("audio", slice(8, 16), audio_present)]
    return RecallData.from_frames(
        plays[~held], plays[held], None, None, (planted.track_ids, content), modalities, ENCODER
    )


@pytest.mark.parametrize("model", ["FREEDOM", "LGMRec", "VBPR"])
def test_content_models_run_with_two_modalities_and_partly_missing_content(planted: Planted, model: str) -> None:
    data = _two_modality_data(planted)
    a = fit_recall(data, model=model, dim=16, epochs=4, patience=4)
    assert np.isfinite(a.user_vectors).all() and np.isfinite(a.item_vectors).all()
    assert a.metrics["valid_recall@20"] > a.metrics["valid_random_recall@20"]


def test_lgmrec_aligns_modalities_only_when_there_are_two(planted: Planted) -> None:
    data = _two_modality_data(planted)
    idx = torch.tensor([0, 1, 2])
    two = build_model(data, RecallConfig(model="LGMRec", dim=8))
    users, items = two.embed()
    assert len(two.modality) == 2 and float(two.extra_loss(idx, idx, idx + 3, users, items).detach()) > 0
    data.modalities = data.modalities[:1]
    one = build_model(data, RecallConfig(model="LGMRec", dim=8))
    users, items = one.embed()
    l2_only = one.l2 * sum(r.pow(2).sum() for r in (one.user[idx], one.item[idx], one.item[idx + 3])) / 6
    assert len(one.modality) == 1
    assert float(one.extra_loss(idx, idx, idx + 3, users, items).detach()) == pytest.approx(float(l2_only.detach()))


def test_content_models_refuse_to_train_without_content(planted: Planted) -> None:
    for model in ("VBPR", "FREEDOM", "LGMRec"):
        with pytest.raises(EncoreError, match=f"{model} needs content"):
            train_recall(planted.interactions, None, model=model, epochs=1)
    with pytest.raises(EncoreError, match="unknown recall model 'ALS'"):
        train_recall(planted.interactions, planted.content_dict(), encoder=ENCODER, model="ALS", epochs=1)


def test_rank_metrics_follow_the_standard_definitions() -> None:
    # One user, 6 items scored 5..0 (item 0 best). Relevant: items 1 and 4 (ranks 2 and 5); item 0 masked,
    # so the ranking is 1, 2, 3, 4, 5 and the relevant items sit at ranks 1 and 4.
    users = np.ones((1, 1), np.float32)
    items = np.arange(5, -1, -1, dtype=np.float32)[:, None]
    m = rank_metrics(users, items, [np.array([1, 4])], [np.array([0])], ks=(1, 3, 5))
    assert m["recall@1"] == 0.5 and m["precision@1"] == 1.0 and m["hit@1"] == 1.0 and m["mrr@1"] == 1.0
    assert m["recall@3"] == 0.5 and m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@5"] == 1.0 and m["precision@5"] == pytest.approx(2 / 5)
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / np.log2(5)) / ideal) and m["ndcg@1"] == pytest.approx(1.0)
    assert m["random_recall@3"] == pytest.approx(3 / 5)
    none = rank_metrics(users, items, [np.array([5])], None, ks=(3,))
    assert none["hit@3"] == 0.0 and none["mrr@3"] == 0.0 and none["ndcg@3"] == 0.0


def test_vbpr_scores_are_the_dot_products_it_exports() -> None:
    torch.manual_seed(0)
    model = VBPR(4, 6, torch.randn(6, 5), dim=3)
    users, items = model.export()
    u, i = model.embed()
    np.testing.assert_allclose(users @ items.T, (u @ i.T).detach().numpy(), rtol=1e-5, atol=1e-6)
