"""`run_benchmark.py --task recall`: a quick synthetic world end to end (results, tables, chart, servable run
bundles, re-run skipping) and one-line errors for bad input. Runs the CLI's main() in process (the CTR
benchmark's tests already cover the script as a subprocess)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from encore.artifacts import load_bundle
from training.run_benchmark import main


@pytest.fixture(autouse=True)
def keep_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_cli(*args: str) -> int:
    return main(["--task", "recall", "--threads", "1", "--no-progress", *args])


def test_quick_grid_writes_results_and_bundles_and_skips_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENCORE_CACHE_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    args = ["--dataset", "synthetic", "--size", "quick", "--models", "BPR,LGMRec", "--seeds", "1",
            "--epochs", "3", "--out", str(out)]  # fmt: skip
    assert run_cli(*args) == 0
    rows = pd.read_csv(out / "results.csv")
    for k in (10, 20, 50):
        assert {f"recall@{k}", f"ndcg@{k}", f"hit@{k}", f"mrr@{k}", f"precision@{k}"} <= set(rows.columns)
    assert len(rows) == 2 * 3 and set(rows.split) == {"valid", "test", "cold"}  # models x splits
    test = rows[rows.split == "test"].set_index("model")
    assert (test["recall@20"] > test["random_recall@20"]).all()
    md = (out / "results.md").read_text()
    assert "— test" in md and "| LGMRec | 1 |" in md and "— cold" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    bundle = load_bundle(Path(test.loc["LGMRec", "run_dir"]))
    assert bundle.components["retriever"]["model"] == "LGMRec"

    capsys.readouterr()
    assert run_cli(*args) == 0
    assert "skip LGMRec seed 1" in capsys.readouterr().err
    assert len(pd.read_csv(out / "results.csv")) == len(rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "synthetic", "--models", "BPR,ALS"], "error: unknown recall model(s) ['ALS']"),
        (["--dataset", "synthetic", "--models", "VBPR", "--content", "none"], "error: VBPR need content"),
        (["--dataset", "frappe", "--models", "BPR"], "error: --task recall knows the datasets"),
        (["--dataset", "synthetic", "--models", "BPR", "--cold-share", "1.5"], "error: --cold-share"),
        (["--dataset", "synthetic", "--models", "BPR", "--precision", "bf16"], "error: --precision applies to"),
    ],
)
def test_bad_input_fails_with_one_readable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run_cli(*args, "--out", str(tmp_path / "x")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(message), lines
    assert not (tmp_path / "x").exists()
