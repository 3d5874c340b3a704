"""Protocol guarantees an audit could break while the rest of the suite stayed green (issue 24).

Each test fails under one of the audit's mutations: early stopping on test instead of valid; the feature spec
fitted on held-out rows; test ranking that does not mask the validation items; the oracle's terms dropped or
noised.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tests.factories import write_frappe_like
from training.cell import Cell, EncodedData, GridSettings, train_cell
from training.datasets.oracle import EvalSet, GenerativeTruth, exact_scores
from training.datasets.protocol import ITEM, USER
from training.datasets.registry import load_dataset
from training.models.registry import get_ctr_model
from training.recall_data import RecallData
from training.recall_metrics import warm_metrics

GRID = GridSettings({"train": {"batch_size": 256, "lr": 0.01}, "models": {}}, epochs=3, progress=False)


@pytest.fixture(scope="module")
def frappe_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_frappe_like(root, n_train=1500, n_eval=400)
    return load_dataset("frappe", root, "all", "none")


def test_the_best_epoch_is_chosen_on_valid_and_never_sees_test(frappe_like):
    encoded = EncodedData.encode(frappe_like)
    result = train_cell(Cell.make(frappe_like, "LR", get_ctr_model("LR"), 1, GRID), encoded)
    # The kept weights score on valid exactly what the early stop recorded for its best epoch ...
    assert result.fit.best_valid == pytest.approx(result.metrics["valid"], abs=1e-9)
    # ... and every epoch's monitored numbers are valid's, not test's.
    assert result.metrics["valid"]["auc"] != pytest.approx(result.metrics["test"]["auc"], abs=1e-6)
    assert result.fit.history[result.fit.best_epoch - 1].valid == result.fit.best_valid


def test_the_feature_spec_is_fitted_on_training_rows_only(frappe_like):
    """Values seen only in valid, test or an extra eval set (cold) must stay out of every vocabulary."""
    unseen = {"valid": 901, "test": 902, "cold": 903}

    def with_value(frame: pd.DataFrame, value: int) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[frame.index[:5], "user"] = value
        return frame

    data = replace(
        frappe_like,
        valid=with_value(frappe_like.valid, unseen["valid"]),
        test=with_value(frappe_like.test, unseen["test"]),
        extra_eval={"cold": with_value(frappe_like.test, unseen["cold"])},
    )
    spec = EncodedData.encode(data).spec
    assert not {str(v) for v in unseen.values()} & set(spec["user"].vocab)
    assert set(spec["user"].vocab) == {str(v) for v in data.train["user"].unique()}


def test_test_ranking_masks_the_users_validation_items():
    """One user: item 0 trained, item 1 in valid (scored above the test item), item 2 in test."""
    one = np.array([0])
    data = RecallData(
        user_ids=np.array(["u"]),
        item_ids=np.array(["a", "b", "c", "d"]),
        train=(one, np.array([0])),
        valid=(one, np.array([1])),
        test=(one, np.array([2])),
        cold_item_ids=np.array([], dtype=str),
        cold=(np.array([], dtype=int), np.array([], dtype=int)),
    )
    users = np.ones((1, 1), np.float32)
    items = np.array([[4.0], [3.0], [2.0], [1.0]], np.float32)
    m = warm_metrics(data, users, items, popularity=np.zeros(4), ks=(1,))
    assert m["valid_recall@1"] == 1.0  # valid: only the training item is masked, item 1 ranks first
    assert m["recall@1"] == 1.0  # test: the valid item is masked too, so the test item ranks first


def _enumerated_scores(weights, n, pool, p_label, share, n_neg):
    """The oracle by brute force: every ordered draw of n distinct items (the world's sampling without
    replacement), its probability, the rows m(K) and negatives it leads to, summed exactly."""
    total = weights.sum()
    played_rows, negative_rows = np.zeros(len(weights)), np.zeros(len(weights))
    for order in itertools.permutations(range(len(weights)), n):
        prob, left = 1.0, total
        for item in order:
            prob *= weights[item] / left
            left -= weights[item]
        chosen = set(order) & set(pool.tolist())
        k = len(chosen)
        m = k if share is None else np.floor(k * share)
        for item in pool:
            if item in chosen:
                played_rows[item] += prob * m / k
            else:
                negative_rows[item] += prob * n_neg * m / (len(pool) - k)
    return (p_label * played_rows)[pool] / (played_rows + negative_rows)[pool]


@pytest.mark.parametrize(("share", "n_neg"), [(0.5, 1), (None, 1), (0.5, 2)])
def test_the_oracle_is_the_exact_bayes_score(share, n_neg):
    """exact_scores equals the brute-force sum over every possible draw (7 items, 3 plays, a 5-item pool) to
    quadrature precision; dropping a term (the share, the not-drawn factor, n_neg) or noising one breaks it."""
    weights = np.array([3.0, 0.4, 1.2, 0.7, 2.1, 0.2, 1.5])
    p_label = np.array([0.9, 0.2, 0.5, 0.7, 0.3, 0.6, 0.4])
    pool = np.array([0, 1, 3, 4, 6])  # items 2 and 5 compete in the draw but give no row (outside the pool)
    truth = GenerativeTruth(lambda u: np.tile(weights, (len(u), 1)), np.array([3]), lambda u, i: p_label[i])
    frame = pd.DataFrame({USER: 0, ITEM: pool})
    result = exact_scores(truth, {"x": EvalSet(frame, pool, share)}, n_neg)
    expected = _enumerated_scores(weights, 3, pool, p_label, share, n_neg)
    np.testing.assert_allclose(result.scores["x"], expected, rtol=1e-6)
    assert result.mass_error < 1e-6
