"""The dataset registry: every entry is consistent, and a new dataset is one Dataset object plus one line."""

from __future__ import annotations

import inspect
from dataclasses import replace

import pytest

from encore.errors import EncoreError
from tests.factories import write_frappe_like
from training import run_benchmark
from training.datasets import registry
from training.datasets.dataset import Dataset
from training.datasets.frappe import load_frappe


@pytest.mark.parametrize("name", list(registry.DATASETS))
def test_each_dataset_takes_the_options_it_declares(name):
    dataset = registry.DATASETS[name]
    assert dataset.name == name
    params = inspect.signature(dataset.loader).parameters
    assert set(dataset.options) <= set(params), "an option the loader does not take would fail only at load time"
    assert dataset.default_features in dataset.feature_settings
    assert "none" in dataset.content_settings
    if dataset.recall is not None:
        assert set(dataset.recall_content.split(",")) <= set(dataset.content_settings)


def test_unknown_names_options_and_settings_are_refused_by_name():
    with pytest.raises(EncoreError, match="unknown dataset 'nope'; known datasets: frappe, synthetic"):
        registry.get_dataset("nope")
    with pytest.raises(EncoreError, match="--task recall knows the datasets synthetic, hetrec-lastfm-2k, not 'frappe'"):
        registry.recall_dataset("frappe")
    frappe = registry.get_dataset("frappe")
    with pytest.raises(EncoreError, match=r"'frappe' does not take option\(s\) \['size'\]"):
        frappe.variant(size="quick")
    with pytest.raises(EncoreError, match="unknown content setting 'dense' for frappe; known: none"):
        frappe.check_settings(["all"], ["dense"])


def test_a_registered_dataset_runs_in_the_benchmark(tmp_path, monkeypatch, capsys):
    """What the registry's docstring promises: a Dataset object and one DATASETS line, nothing else."""

    def load_mini(root, features, content, *, rows: int = 1500):
        write_frappe_like(root, n_train=rows, n_eval=300)
        return replace(load_frappe(root, "all", content), name="mini")

    mini = Dataset("mini", load_mini, options=("rows",), feature_settings=("all",), default_features="all")
    monkeypatch.setitem(registry.DATASETS, "mini", mini)
    argv = ["--dataset", "mini", "--models", "LR", "--epochs", "1", "--threads", "1", "--no-progress"]
    assert run_benchmark.main([*argv, "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 0
    results = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(results) == 3 and all(line.startswith("mini,") for line in results[1:])
    assert (tmp_path / "out" / "runs" / "mini_all_none_LR_s2021" / "model.onnx").is_file()
