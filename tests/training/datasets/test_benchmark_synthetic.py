"""The synthetic grid end to end through the CLI: results.csv/md/png, cold sets, skipping, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[3]


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "training" / "run_benchmark.py"), "--threads", "1", "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_quick_grid_with_cold_sets_writes_tables_chart_and_skips_on_rerun(quick_world, world_root, tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", "synthetic", "--quick", "--cold", "--features", "id", "--content", "none,tokens"]
    args += ["--models", "DeepFM", "--seeds", "1", "--epochs", "1", "--out", str(out), "--data-root", str(world_root)]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert set(results.split) == {"valid", "test", "cold", "mixed"}
    assert set(results.content) == {"none", "tokens"} and set(results.variant) == {"quick/random+cold20"}
    assert results.oracle_auc.between(0.7, 1.0).all()
    assert (results.auc < results.oracle_auc + 0.02).all()
    md = (out / "results.md").read_text()
    assert "### synthetic (quick/random+cold20) — cold AUC" in md and "| features | model | none | tokens |" in md
    assert "cold logloss" in md and "mixed AUC" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    tokens_run = Path(results[results.content == "tokens"].run_dir.iloc[0])
    assert (tokens_run / "codebooks" / "codebooks.json").is_file()
    manifest = json.loads((tokens_run / "manifest.json").read_text())
    frozen = [p for p in manifest["data_files"] if p.endswith("test.parquet")]
    assert frozen and len(manifest["data_files"][frozen[0]]) == 64  # the frozen negatives' sha256

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skip") == 2
    assert len(pd.read_csv(out / "results.csv")) == len(results)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_bad_grid_input_fails_in_one_line(world_root, tmp_path):
    common = ["--models", "DeepFM", "--out", str(tmp_path / "o"), "--data-root", str(world_root)]
    line = _one_line_error(run_cli("--dataset", "synthetic", "--quick", "--features", "id,id+genre", *common))
    assert "unknown feature setting 'id+genre'" in line and "id+cat+num" in line
    line = _one_line_error(run_cli("--dataset", "synthetic", "--quick", "--content", "audio", *common))
    assert "unknown content setting 'audio'" in line
    line = _one_line_error(run_cli("--dataset", "frappe", "--cold", *common))
    assert "does not take option(s) ['protocol']" in line
    assert not (tmp_path / "o" / "results.csv").exists()


def test_token_k_and_layers_reach_the_codebooks_and_name_the_variant(quick_world, world_root, tmp_path):
    out = tmp_path / "tok"
    args = ["--dataset", "synthetic", "--quick", "--features", "id", "--content", "tokens", "--models", "LR"]
    args += ["--seeds", "1", "--epochs", "1", "--out", str(out), "--data-root", str(world_root)]
    proc = run_cli(*args, "--token-k", "8", "--token-layers", "last1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(out / "results.csv")
    assert set(results.variant) == {"quick/random+tok-k8-last1"}
    books = json.loads((Path(results.run_dir.iloc[0]) / "codebooks" / "codebooks.json").read_text())
    assert books["k"] == 8 and books["tokenized_layers"] == [0]  # MFCC: one layer, cut into groups
    bad = run_cli(*args, "--token-layers", "last2")  # MFCC has a single layer
    assert bad.returncode != 0 and "last2" in bad.stderr
