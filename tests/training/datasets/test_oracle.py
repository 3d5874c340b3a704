"""The exact oracle against the process it describes, simulated end to end (training/datasets/oracle.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.datasets.oracle import ITEM, USER, EvalSet, GenerativeTruth, exact_scores, monte_carlo_scores


def _case(share):
    rng = np.random.default_rng(7)
    weights = np.exp(rng.normal(0, 1.3, 40))
    p_label = rng.uniform(0.1, 0.9, 40)
    in_pool = np.zeros(40, dtype=bool)
    in_pool[:30] = True  # 10 items compete in the draw but are no pool's (cold, or dropped by the k-core)
    truth = GenerativeTruth(lambda u: np.tile(weights, (len(u), 1)), np.array([12]), lambda u, i: p_label[i])
    frame = pd.DataFrame({USER: 0, ITEM: np.arange(30)})
    exact = exact_scores(truth, {"x": EvalSet(frame, np.arange(30), share)}, n_neg=1).scores["x"]
    mc, se = monte_carlo_scores(weights, 12, in_pool, p_label, share, n_neg=1, reps=60_000, seed=11)
    return weights, p_label, exact, mc[:30], se[:30]


def test_the_exact_oracle_matches_a_seeded_simulation_within_its_error():
    for share in (0.25, None):
        weights, p_label, exact, mc, se = _case(share)
        z = (exact - mc) / se
        assert np.abs(z).max() < 4.5, (share, z)
        # The simulation is sharp enough to see the old estimate's error: min(1, n * pi) for the inclusion
        # probability, no (1 - P(played)) on the negative side, and the user's n plays as the share.
        pi = weights / weights.sum()
        odds = np.minimum(1, 12 * pi[:30]) * (30 - 12 * pi[:30].sum()) / 12
        old = odds / (1 + odds) * p_label[:30]
        assert np.abs((old - mc) / se).max() > 10, share
