"""One benchmark cell in-process: train_cell is seeded, save_run writes the run folder whole or not at all."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.factories import write_frappe_like
from training.cell import Cell, EncodedData, GridSettings, result_rows, save_run, train_cell
from training.datasets.registry import load_dataset
from training.metrics import PER_USER_FILE, load_per_user
from training.models.registry import get_ctr_model

GRID = GridSettings({"train": {"batch_size": 512}, "models": {"LR": {"train": {"lr": 0.01}}}}, epochs=1, progress=False)


@pytest.fixture(scope="module")
def frappe_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_frappe_like(root, n_train=1500, n_eval=400)
    data = load_dataset("frappe", root, "all", "none")
    return data, EncodedData.encode(data)


def test_cell_config_layers_the_dataset_config_the_model_and_the_flags(frappe_like):
    data, _ = frappe_like
    cell = Cell.make(data, "LR", get_ctr_model("LR"), 3, GRID)
    assert (cell.train.batch_size, cell.train.lr, cell.train.epochs, cell.seed) == (512, 0.01, 1, 3)
    assert not cell.train.progress and cell.run_id == "frappe_all_none_LR_s3"


def test_same_seed_same_weights_and_the_run_folder_holds_them(frappe_like, tmp_path):
    data, encoded = frappe_like
    first = train_cell(Cell.make(data, "LR", get_ctr_model("LR"), 3, GRID), encoded)
    again = train_cell(Cell.make(data, "LR", get_ctr_model("LR"), 3, GRID), encoded)
    assert first.metrics == again.metrics and set(first.metrics) == {"valid", "test"}
    run_dir = save_run(first, encoded.spec, tmp_path / "runs")
    saved = load_file(str(run_dir / "weights.safetensors"))
    for name, tensor in first.model.state_dict().items():
        assert (saved[name] == tensor.numpy()).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["metrics"] == first.metrics and manifest["feature_spec_hash"] == encoded.spec.hash
    rows = result_rows(first, run_dir)
    assert [r["split"] for r in rows] == ["valid", "test"] and rows[1]["auc"] == first.metrics["test"]["auc"]
    assert {r["run_dir"] for r in rows} == {str(run_dir)}


def test_the_run_folder_keeps_the_per_user_aucs_behind_each_gauc(frappe_like, tmp_path):
    data, encoded = frappe_like
    result = train_cell(Cell.make(data, "LR", get_ctr_model("LR"), 3, GRID), encoded)
    per_user = load_per_user(save_run(result, encoded.spec, tmp_path / "runs") / PER_USER_FILE)
    assert set(per_user.split) == {"valid", "test"}
    for split, users in per_user.groupby("split"):
        gauc = np.average(users.auc, weights=users.weight)
        assert gauc == pytest.approx(result.metrics[split]["gauc"]) and users.user.is_unique


def test_a_failed_save_keeps_the_previous_run_folder(frappe_like, tmp_path):
    data, encoded = frappe_like
    result = train_cell(Cell.make(data, "LR", get_ctr_model("LR"), 3, GRID), encoded)
    run_dir = save_run(result, encoded.spec, tmp_path / "runs")
    before = sorted(p.name for p in run_dir.iterdir())
    broken = replace(data, run_files={"codebooks": tmp_path / "gone"})
    result.cell = Cell.make(broken, "LR", get_ctr_model("LR"), 3, GRID)  # same run id, a run file that is missing
    with pytest.raises(FileNotFoundError):
        save_run(result, encoded.spec, tmp_path / "runs")
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]  # no temp folder left behind
