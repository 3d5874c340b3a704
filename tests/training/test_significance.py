"""Significance: Holm's correction, paired tests over seeds, the bootstrap over users, and the docs' markers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from training.doc_tables import DOCS, TABLES
from training.metrics import gauc, load_per_user, per_group_auc, save_per_user
from training.significance import bootstrap_gauc_diff, holm, paired_test, seed_test_table, seed_tests


def test_holm_matches_a_hand_computed_example():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (step-down keeps order).
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(adjusted < 0.05) == [True, False, False, True]  # Bonferroni (x4) would keep only the last


def test_holm_caps_at_one_and_leaves_untestable_comparisons_out():
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.01, np.nan, 0.02])  # m = 2, not 3
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.02]) and np.isnan(adjusted[1])


def test_the_paired_test_pairs_seeds_and_keeps_the_direction():
    # Seeds differ a lot from each other, the challenger is steadily 0.01 above its own seed's baseline.
    baseline = np.array([0.60, 0.70, 0.80, 0.65])
    challenger = baseline + np.array([0.010, 0.011, 0.009, 0.010])
    diff, p = paired_test(challenger, baseline)
    assert diff == pytest.approx(0.010) and p < 1e-3
    assert stats.ttest_ind(challenger, baseline).pvalue > 0.5  # unpaired, the effect drowns in the seed spread
    back, p_back = paired_test(baseline, challenger)
    assert back == pytest.approx(-0.010) and p_back == pytest.approx(p)


def test_a_constant_difference_or_a_single_seed_cannot_be_tested():
    assert np.isnan(paired_test(np.array([0.6, 0.7]), np.array([0.5, 0.6]))[1])
    assert np.isnan(paired_test(np.array([0.6]), np.array([0.5]))[1])


def _grid_rows(effects: dict[tuple[str, str], float], seeds: int = 4) -> pd.DataFrame:
    """Cold rows of a (features, model) x content grid: `none` varies by seed, each other content adds its effect
    and a little noise of its own."""
    rng = np.random.default_rng(7)
    rows = []
    for (model, content), effect in effects.items():
        for seed in range(1, seeds + 1):
            base = 0.6 + 0.02 * seed
            value = base if content == "none" else base + effect + rng.normal(0, 0.002)
            rows.append({"features": "id", "model": model, "content": content, "seed": seed,
                         "split": "cold", "gauc": value})  # fmt: skip
    return pd.DataFrame(rows)


def test_seed_tests_correct_across_the_whole_table_and_mark_what_is_real():
    rows = _grid_rows({("FM", "none"): 0, ("FM", "dense"): 0.05, ("LR", "none"): 0, ("LR", "dense"): 0.0})
    tests = seed_tests(rows, "cold", "gauc", [("dense", "none")]).set_index("model")
    assert tests.loc["FM", "diff"] == pytest.approx(0.05, abs=0.003) and tests.loc["FM", "seeds"] == 4
    assert list(tests.p_holm) == pytest.approx(list(holm(tests.p.to_numpy())))
    assert bool(tests.loc["FM", "significant"]) and not bool(tests.loc["LR", "significant"])
    lines = seed_test_table(tests.reset_index(), "GAUC")
    assert lines[0] == "| features | model | dense - none GAUC | p (Holm) |"
    fm, lr = (next(line for line in lines if f"| {m} |" in line) for m in ("FM", "LR"))
    assert fm.rstrip(" |").endswith("*") and "*" not in lr


def _per_user(rng: np.random.Generator, n_users: int, shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A baseline run's per-user AUCs (users differ a lot) and a challenger `shift` above it per user, noisily."""
    users = np.arange(n_users).astype(str)
    weight = rng.integers(5, 50, n_users)
    base = rng.normal(0.7, 0.08, n_users)
    challenger = base + shift + rng.normal(0, 0.05, n_users)
    return (pd.DataFrame({"user": users, "weight": weight, "auc": challenger}),
            pd.DataFrame({"user": users, "weight": weight, "auc": base}))  # fmt: skip


def test_the_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for _ in range(40):
        challenger, baseline = _per_user(rng, 400, shift=0.03)
        ci = bootstrap_gauc_diff([challenger], [baseline], n_boot=400, seed=int(rng.integers(1 << 30)))
        covered += ci["low"] <= 0.03 <= ci["high"]
        widths.append(ci["high"] - ci["low"])
        assert ci["low"] > 0 and ci["p_boot"] < 0.01 and ci["users"] == 400
    assert covered >= 34  # nominal 95%: 38 of 40
    # Paired: the same users are redrawn in both runs, so the users' own spread (0.08) cancels; per-run
    # resampling would give an interval about sqrt(0.05² + 2 * 0.08²) / 0.05 = 2.4 times as wide.
    assert np.mean(widths) < 2 * 1.96 * 0.05 / np.sqrt(400) * 1.3


def test_the_bootstrap_interval_of_no_effect_holds_zero_and_uses_shared_users_only():
    rng = np.random.default_rng(1)
    challenger, baseline = _per_user(rng, 300, shift=0.0)
    ci = bootstrap_gauc_diff([challenger, challenger], [baseline, baseline.iloc[:250]])
    assert ci["low"] < 0 < ci["high"] and ci["users"] == 250


def test_per_user_aucs_round_trip_and_give_the_gauc(tmp_path):
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 40, 2000)
    labels = rng.integers(0, 2, 2000)
    scores = np.clip(0.3 * labels + rng.random(2000), 0, 1) / 1.3
    per = per_group_auc(labels, scores, groups)
    save_per_user(tmp_path / "u.npz", {"test": per, "cold": per.iloc[:5]})
    back = load_per_user(tmp_path / "u.npz")
    test = back[back.split == "test"]
    assert np.average(test.auc, weights=test.weight) == pytest.approx(gauc(labels, scores, groups))
    assert (back.split == "cold").sum() == 5 and list(test.user) == [str(g) for g in per.group]


def test_the_benchmarks_doc_holds_every_significance_table_with_its_markers():
    text = (DOCS / "benchmarks.md").read_text()
    names = [n for n in TABLES if n.startswith("significance")]
    assert len(names) == 6 and all(f"<!-- table: {n} -->" in text for n in names)
    cold = TABLES["significance-synthetic-cold"]()
    assert "p (Holm)" in cold[0] and any(line.count("*") for line in cold[2:])
