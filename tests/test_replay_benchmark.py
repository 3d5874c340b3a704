"""The replay benchmark's pure parts (benchmarks/replay.py): its Recall@20, its relevant sets, and listening drawn
from the quick world's truth. The benchmark itself (a stack, a retrain) is run by hand, not here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.replay import (
    OUT_DIR,
    Truth,
    as_events,
    compare_runs,
    listening,
    next_day_rows,
    recall_at_k,
    run_settings,
    true_top,
    until_plays,
    world_truth,
)
from encore.events import label


def test_recall_at_20_counts_the_relevant_among_the_first_20_only() -> None:
    relevant = {f"t{i}" for i in range(20)}
    recommended = [f"t{i}" for i in range(0, 40, 2)]  # t0, t2, ..., t38: ten of them relevant
    assert recall_at_k(recommended, relevant) == 0.5
    assert recall_at_k([*[f"x{i}" for i in range(20)], "t0"], relevant) == 0.0  # the 21st does not count
    assert recall_at_k(["t0", "t1"], {"t0", "t1"}) == 1.0  # fewer relevant than k: divided by their number
    assert math.isnan(recall_at_k(["t0"], set()))


def test_the_true_top_leaves_out_what_was_heard() -> None:
    items = [f"t{i}" for i in range(6)]
    preference = np.array([0.1, 0.9, 0.5, 0.8, 0.0, 0.7])
    assert true_top(preference, items, set(), k=3) == {"t1", "t3", "t5"}
    assert true_top(preference, items, {"t1", "t5"}, k=3) == {"t3", "t2", "t0"}


def test_listens_are_drawn_by_exposure_and_played_by_true_liking() -> None:
    items = [f"t{i}" for i in range(100)]
    liked = np.where(np.arange(100) < 50, 0.9, 0.1)[None, :]
    exposure = np.where(np.arange(100) % 10 == 9, 0.0, 1.0)[None, :]  # every tenth track is never heard
    truth = Truth(liked, exposure / exposure.sum(), items)
    rng = np.random.default_rng(0)
    listens = [listen for _ in range(200) for listen in listening(rng, truth, 0, 30, heard={"t0", "t1"})]
    heard = [int(track[1:]) for track, _ in listens]
    assert not {0, 1} & set(heard) and all(i % 10 != 9 for i in heard)
    played = np.array([p for _, p in listens])
    liked_rate, other_rate = played[np.array(heard) < 50].mean(), played[np.array(heard) >= 50].mean()
    assert liked_rate == pytest.approx(0.9, abs=0.03) and other_rate == pytest.approx(0.1, abs=0.03)
    one_day = listening(rng, truth, 0, 30)
    assert len({track for track, _ in one_day}) == 30  # without replacement within a day


def test_the_world_truth_rows_follow_the_world_and_uploads_copy_their_track() -> None:
    from training.datasets.synthetic import load_world, world_params

    world = load_world(world_params("quick"), progress=False)
    listeners, n = np.array([3, 17]), len(world.tracks)
    sources = np.array([*range(n), 5])  # one upload copying track 5
    truth = world_truth(world, listeners, sources, [*map(str, range(n)), "upload-0"])
    liked, _ = world.truth(np.full(n, 17), np.arange(n), 2)
    np.testing.assert_allclose(truth.liked[1, :n], liked)
    assert truth.liked[1, n] == truth.liked[1, 5] and truth.exposure[0, n] == truth.exposure[0, 5]
    np.testing.assert_allclose(truth.exposure.sum(axis=1), 1.0)
    # drawn plays follow the truth: the plays' mean true liking is above the skips'
    rng = np.random.default_rng(1)
    listens = [(int(t) if t != "upload-0" else 5, p) for t, p in listening(rng, truth, 1, n)]
    played = [liked[t] for t, p in listens if p]
    skipped = [liked[t] for t, p in listens if not p]
    assert np.mean(played) > np.mean(skipped) + 0.2


def test_events_label_as_the_truth_says_and_play_steps_count_plays() -> None:
    listens = [("a", False), ("b", True), ("c", False), ("d", True), ("e", True)]
    events = as_events("u1", listens, np.arange(5.0), "day1")
    assert [label(e["type"], e["ms"]) for e in events] == [0, 1, 0, 1, 1]
    assert len({e["id"] for e in events}) == 5
    assert [until_plays(listens, n) for n in (0, 1, 2, 3, 10)] == [0, 2, 4, 5, 5]
    rows = next_day_rows([0], ["u1"], [listens], np.datetime64("2026-12-07"))
    assert rows["label"].tolist() == [0, 1, 0, 1, 1] and set(rows["user_id"]) == {"u1"}


def test_the_compare_table_names_each_runs_settings_and_reads_its_json() -> None:
    assert run_settings({"stack_env": "[]", "retrain_args": "[]"}) == "defaults"
    assert run_settings({"stack_env": "['ENCORE_RANKER_CANDIDATES=50']", "retrain_args": "[]"}) == (
        "ENCORE_RANKER_CANDIDATES=50"
    )
    both = {"stack_env": "['A=1', 'B=2']", "retrain_args": "['--event-weight', '5']"}
    assert run_settings(both) == "A=1, B=2, retrain --event-weight 5"
    assert run_settings({"stack_env": "[]"}) == "defaults"  # runs from before --retrain-args was recorded
    table = compare_runs(["quick", "quick-activity"]).splitlines()
    assert len(table) == 4 and all(line.count("|") == 14 for line in table)
    run = json.loads((OUT_DIR / "quick-activity.json").read_text())
    cells = [c.strip() for c in table[3].split("|")[1:-1]]
    assert cells[:2] == ["quick-activity", "retrain --activity-features"]
    assert cells[4] == f"{run['next_day']['new']['recall_known']['mean']:.4f}"
    assert cells[8] == f"{run['next_day']['auc']['listens']['gauc_new']:.4f}"
    assert cells[10] == f"{run['next_day']['new']['uploads_recall']:.4f}"
    assert cells[11] == ("yes" if run["retrain"]["promoted"] else "no")
