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
    # It stopped early (this seed plateaus within a few epochs), after `patience` non-improving epochs in a row.
    # Every non-improving epoch multiplied the lr by 0.1 and an improving one kept it (a dip before the best epoch
    # decays it too: how many dips come first depends on the float order of the thread count the suite left).
    assert result.epochs_run < cfg.epochs
    assert result.epochs_run - result.best_epoch == cfg.patience
    expected, lr, best = [], cfg.lr, -1.0
    for epoch in result.history:
        expected.append(lr)
        if epoch.valid["auc"] > best + 1e-6:
            best = epoch.valid["auc"]
        else:
            lr *= 0.1
    assert [e.lr for e in result.history] == pytest.approx(expected)
    assert expected[-1] < cfg.lr  # the plateau did decay it
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
    assert gauc(labels, scores, groups) == pytest.approx(_sklearn_gauc(labels, scores, groups), abs=1e-12)


def test_binary_metrics_values_match_their_definitions():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 30, 3000)
    labels = (rng.random(3000) < 0.4).astype(float)
    probabilities = np.round(rng.random(3000) * 0.8 + 0.3 * labels, 2).clip(0, 1)
    probabilities[:2] = [0.0, 1.0]  # exact 0 and 1: logloss must clip them, not return inf
    metrics = binary_metrics(labels, probabilities, groups)
    assert metrics["auc"] == pytest.approx(_pairwise_auc(labels, probabilities), abs=1e-12)
    p = probabilities.clip(1e-7, 1 - 1e-7)
    expected_logloss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    assert np.isfinite(metrics["logloss"]) and metrics["logloss"] == pytest.approx(expected_logloss, rel=1e-12)
    assert metrics["gauc"] == pytest.approx(_sklearn_gauc(labels, probabilities, groups), abs=1e-12)
    assert "gauc" not in binary_metrics(labels, probabilities)  # no groups, no GAUC


def _sklearn_gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Per-group sklearn AUC over groups with both classes, weighted by the group's impressions."""
    num, den = 0.0, 0
    for g in np.unique(groups):
        m = groups == g
        if 0 < labels[m].sum() < m.sum():
            num += roc_auc_score(labels[m], scores[m]) * m.sum()
            den += m.sum()
    return num / den


def _pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half: the AUC's definition."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


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


def test_fused_adam_follows_the_per_tensor_adam(mixed_data):
    """The trainer's fused Adam against torch's per-tensor loop: same weights after 30 steps and an lr cut."""
    from training.trainer import adam

    spec, train, _ = mixed_data
    inputs, labels = next(TensorSplit.from_frame("train", spec, train).batches(256))
    models = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = get_ctr_model("DeepFM")(spec, embedding_dim=8, hidden_units=(16,))
        opt = adam(model.parameters(), 1e-2) if fused else torch.optim.Adam(model.parameters(), lr=1e-2)
        assert opt.defaults["fused"] is (True if fused else None)
        for step in range(30):
            if step == 20:
                opt.param_groups[0]["lr"] = 1e-3
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(inputs), labels).backward()
            opt.step()
        models.append(model.state_dict())
    for name, value in models[0].items():
        torch.testing.assert_close(value, models[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_compiled_forward_trains_as_the_eager_one(mixed_data):
    """TrainConfig.compile runs the training forward pass through torch.compile (a graph really compiled, one per
    batch shape, and no graph break recompiling every step) and trains the same model as eager execution, up to
    float rounding of fused kernels. 4,000 rows in batches of 500: one shape, one compilation (an epoch's shorter
    last batch would add a second, 10 s more of the suite)."""
    from torch._dynamo.utils import counters

    spec, train, valid = mixed_data
    tr, va = TensorSplit.from_frame("train", spec, train), TensorSplit.from_frame("valid", spec, valid)

    def run(compile_: bool):
        torch.manual_seed(5)
        model = get_ctr_model("FM")(spec, embedding_dim=4)
        cfg = TrainConfig(lr=1e-2, batch_size=500, epochs=2, seed=5, progress=False, compile=compile_)
        return fit(model, tr, va, cfg)

    torch._dynamo.reset()
    counters.clear()
    eager = run(False)
    assert counters["stats"]["unique_graphs"] == 0
    compiled = run(True)
    assert len(tr) == 4000 and counters["stats"]["unique_graphs"] == 1
    for e, c in zip(eager.history, compiled.history, strict=True):
        assert c.train_loss == pytest.approx(e.train_loss, rel=1e-4)
        assert c.valid["auc"] == pytest.approx(e.valid["auc"], abs=1e-4)
    torch._dynamo.reset()
