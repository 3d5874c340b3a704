"""Trainer protocol: learns a planted signal, decays lr on plateaus, stops early, reloads the best epoch."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from training.data import TensorSplit
from training.metrics import binary_metrics, gauc
from training.models.registry import get_ctr_model
from training.trainer import TrainConfig, evaluate, fit


def test_deepfm_learns_the_planted_signal_and_keeps_the_best_epoch(mixed_data):
    spec, train, valid = mixed_data
    tr, va = TensorSplit.from_frame("train", spec, train), TensorSplit.from_frame("valid", spec, valid, "user")
    model = get_ctr_model("DeepFM")(spec, embedding_dim=8, hidden_units=(32,))
    cfg = TrainConfig(lr=3e-3, batch_size=256, epochs=30, patience=2, embedding_l2=1e-4, seed=7, progress=False)
    result = fit(model, tr, va, cfg)
    assert result.best_valid["auc"] > 0.75  # the generator's logit is learnable; chance is 0.5
    # The model holds the best epoch's weights, not the last epoch's.
    assert evaluate(model, va)["auc"] == pytest.approx(result.best_valid["auc"], abs=1e-9)
    aucs = [e.valid["auc"] for e in result.history]
    assert result.best_epoch == int(np.argmax(aucs)) + 1
    assert "gauc" in result.best_valid
    # Every non-improving epoch multiplied the lr by 0.1; stopping came after `patience` of them.
    if result.epochs_run < cfg.epochs:
        assert result.epochs_run - result.best_epoch == cfg.patience
        assert result.history[-1].lr == pytest.approx(cfg.lr * 0.1 ** (cfg.patience - 1))
    assert result.samples_seen == len(tr) * result.epochs_run and result.train_seconds > 0


def test_same_seed_same_result_different_seed_different_result(mixed_data):
    spec, train, valid = mixed_data
    tr, va = TensorSplit.from_frame("train", spec, train), TensorSplit.from_frame("valid", spec, valid)

    def run(seed):
        torch.manual_seed(seed)
        model = get_ctr_model("FM")(spec, embedding_dim=4)
        cfg = TrainConfig(lr=1e-2, batch_size=512, epochs=2, seed=seed, progress=False)
        return fit(model, tr, va, cfg).history[-1].valid["auc"]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_embedding_penalty_shrinks_the_tables(mixed_data):
    spec, train, valid = mixed_data
    tr, va = TensorSplit.from_frame("train", spec, train), TensorSplit.from_frame("valid", spec, valid)
    norms = {}
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        model = get_ctr_model("FM")(spec, embedding_dim=4)
        fit(model, tr, va, TrainConfig(lr=1e-2, batch_size=512, epochs=3, embedding_l2=lam, progress=False))
        norms[lam] = sum(t.pow(2).sum().item() for t in model.embedding_tables())
    assert norms[1.0] < 0.5 * norms[0.0]


def test_gauc_equals_per_user_sklearn_auc_weighted_by_impressions():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 3000)
    labels = (rng.random(3000) < 0.4).astype(float)
    scores = np.round(rng.random(3000) + 0.3 * labels, 2)  # rounding makes ties, like real scores
    expected_num, expected_den = 0.0, 0
    for g in np.unique(groups):
        m = groups == g
        if 0 < labels[m].sum() < m.sum():
            expected_num += roc_auc_score(labels[m], scores[m]) * m.sum()
            expected_den += m.sum()
    assert gauc(labels, scores, groups) == pytest.approx(expected_num / expected_den, abs=1e-12)
    metrics = binary_metrics(labels, scores.clip(0, 1), groups)
    assert set(metrics) == {"auc", "logloss", "gauc"}


def test_resample_supplies_fresh_training_rows_after_the_first_epoch(mixed_data):
    spec, train, valid = mixed_data
    tr, va = TensorSplit.from_frame("train", spec, train), TensorSplit.from_frame("valid", spec, valid)
    calls = []

    def resample(epoch):
        calls.append(epoch)
        return TensorSplit.from_frame("train", spec, train.sample(frac=1.0, random_state=epoch))

    model = get_ctr_model("FM")(spec, embedding_dim=4)
    cfg = TrainConfig(lr=1e-2, batch_size=512, epochs=3, patience=5, progress=False)
    result = fit(model, tr, va, cfg, resample)
    assert calls == [2, 3] and result.epochs_run == 3


def test_warmup_epochs_neither_decay_the_lr_nor_count_toward_stopping(mixed_data):
    spec, train, valid = mixed_data
    # Validation labels with no signal: valid AUC wanders, so the plateau rule fires within a few epochs.
    noise = valid.assign(label=np.random.default_rng(0).permutation(valid["label"].to_numpy()))
    tr, va = TensorSplit.from_frame("train", spec, train), TensorSplit.from_frame("valid", spec, noise)

    def run(warmup):
        torch.manual_seed(0)
        model = get_ctr_model("FM")(spec, embedding_dim=4)
        cfg = TrainConfig(lr=1e-2, batch_size=512, epochs=12, patience=2, warmup_epochs=warmup, seed=5, progress=False)
        return fit(model, tr, va, cfg)

    plain, warm = run(0), run(6)
    assert plain.epochs_run < 6  # without a warm-up the noise stops training early
    assert warm.epochs_run >= 7  # 6 protected epochs, then patience counts from there
    assert [e.lr for e in warm.history[:6]] == [1e-2] * 6
    # Best-epoch tracking still covers the warm-up: the restored weights may come from it.
    assert warm.best_epoch == int(np.argmax([e.valid["auc"] for e in warm.history])) + 1
