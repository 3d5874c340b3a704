"""The benchmark CLI: a tiny Frappe-layout run end to end, re-run skipping, and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.factories import write_frappe_like

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = {
    "dataset",
    "model",
    "features",
    "content",
    "seed",
    "split",
    "auc",
    "logloss",
    "best_epoch",
    "train_seconds",
    "train_samples_per_s",
}


def run_cli(*args, data_root=None):
    cmd = [sys.executable, str(ROOT / "training" / "run_benchmark.py"), "--threads", "1", "--no-progress", *args]
    if data_root is not None:
        cmd += ["--data-root", str(data_root)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_tiny_run_writes_results_runs_and_skips_finished_cells(tmp_path):
    write_frappe_like(tmp_path / "data")
    out = tmp_path / "out"
    grid = ("--dataset", "frappe", "--models", "LR,DeepFM", "--seeds", "1,2", "--epochs", "2", "--out", str(out))
    proc = run_cli(*grid, data_root=tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    results = pd.read_csv(out / "results.csv")
    assert REQUIRED <= set(results.columns)
    assert len(results) == 2 * 2 * 2  # models x seeds x {valid, test}
    assert set(results.split) == {"valid", "test"}
    assert results.auc.between(0.55, 1.0).all()  # the planted signal is learnt
    md = (out / "results.md").read_text()
    assert "| all | none | DeepFM | 2 |" in md and "published AUC" in md
    run_dir = Path(results.run_dir.iloc[0])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["feature_spec_hash"] and manifest["versions"]["torch"]
    assert set(manifest["data_files"]) == {
        str(tmp_path / "data/frappe/x1" / f"{s}.csv") for s in ("train", "valid", "test")
    }
    assert {p.name for p in run_dir.iterdir()} == {
        "manifest.json",
        "model.onnx",
        "spec.json",
        "weights.safetensors",
        "per_user_auc.npz",
    }
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".")]
    # The committable evidence: one compact manifest per run beside results.csv, weights and history left out.
    committed = [json.loads(line) for line in (out / "manifests.jsonl").read_text().splitlines()]
    assert sorted(m["run_id"] for m in committed) == sorted(p.name for p in (out / "runs").iterdir())
    assert all("history" not in m and m["metrics"]["test"]["auc"] and m["data_files"] for m in committed)

    again = run_cli(*grid, data_root=tmp_path / "data")
    assert again.returncode == 0
    assert again.stderr.count("skip") == 4
    assert len(pd.read_csv(out / "results.csv")) == 8


def _assert_clean_failure(proc, out, pattern):
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert pattern in lines[0], lines[0]
    assert not (out / "results.csv").exists() and not (out / "results.md").exists()


def test_missing_dataset_folder(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--dataset", "frappe", "--models", "LR", "--out", str(out), data_root=tmp_path / "nowhere")
    _assert_clean_failure(proc, out, "dataset folder not found")


def test_unknown_model_name_fails_before_reading_data(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--dataset", "frappe", "--models", "LR,DeepFFM", "--out", str(out), data_root=tmp_path)
    _assert_clean_failure(proc, out, "unknown model 'DeepFFM'")


def test_unknown_dataset(tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(run_cli("--dataset", "criteo", "--models", "LR", "--out", str(out)), out, "unknown dataset")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.rename(columns={"city": "town"}), "unknown column(s) ['town'], missing column(s) ['city']"),
        (lambda df: df.drop(columns=["weather"]), "missing column(s) ['weather']"),
        (lambda df: df.assign(cost=df.cost.astype(str).where(df.index != 3, "cheap")), "row 5 has 'cheap'"),
        (lambda df: df.iloc[:0], "split is empty"),
        (lambda df: df.assign(label=df.label.where(df.index != 0, 7)), "must be 0 or 1"),
    ],
    ids=["unknown-column", "missing-column", "non-numeric", "empty-split", "bad-label"],
)
def test_bad_files_end_in_one_clear_line_and_leave_nothing(tmp_path, mutate, message):
    x1 = write_frappe_like(tmp_path / "data", n_train=200, n_eval=50)
    path = x1 / "valid.csv"
    mutate(pd.read_csv(path)).to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_cli(
        "--dataset", "frappe", "--models", "LR", "--epochs", "1", "--out", str(out), data_root=tmp_path / "data"
    )
    _assert_clean_failure(proc, out, message)


def test_bad_seeds(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("--dataset", "frappe", "--models", "LR", "--seeds", "1,x", "--out", str(out))
    _assert_clean_failure(proc, out, "--seeds must be comma-separated integers")
