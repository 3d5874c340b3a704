"""The docs' result tables are generated from committed CSVs (python -m training.results --write-docs)."""

import json
import shutil

import pandas as pd
import pytest

from training import doc_tables, fuxictr_tables
from training.doc_tables import CHECKED_DOCS, DOCS, NOT_REPRODUCIBLE, render_doc, stale_files, unbacked_tables
from training.results import main
from training.significance import PER_USER_DIR


def test_every_generated_table_matches_its_csv():
    assert stale_files() == [], "run: python -m training.results --write-docs"


@pytest.mark.parametrize("name", CHECKED_DOCS)
def test_every_table_is_generated_or_marked_not_reproducible(name):
    assert unbacked_tables(DOCS / name) == []


def test_a_changed_csv_number_makes_its_table_stale(tmp_path, monkeypatch):
    """Copy the grid CSVs, change one cell, and the docs no longer match: the check reads the CSV, not the doc."""
    for source in doc_tables.result_folders():
        folder = source.name
        (tmp_path / folder).mkdir()
        if (source / PER_USER_DIR).is_dir():  # the bootstrap table reads the committed per-user AUCs
            shutil.copytree(source / PER_USER_DIR, tmp_path / folder / PER_USER_DIR)
        rows = pd.read_csv(source / "results.csv")
        if folder == "synthetic_grid":
            rows.loc[(rows.split == "cold") & (rows.model == "LR"), "gauc"] += 0.01
        rows.to_csv(tmp_path / folder / "results.csv", index=False)
    shutil.copytree(doc_tables.RESULTS / fuxictr_tables.FOLDER, tmp_path / fuxictr_tables.FOLDER)
    text = (DOCS / "benchmarks.md").read_text()
    monkeypatch.setattr(doc_tables, "RESULTS", tmp_path)
    rendered = render_doc(text)
    assert rendered != text
    changed = [a for a, b in zip(text.splitlines(), rendered.splitlines(), strict=True) if a != b]
    assert changed and all("| LR |" in line for line in changed)


def test_an_unmarked_table_is_found(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        f"# A\n\n{NOT_REPRODUCIBLE} one-off.\n\n| a |\n|---|\n| 1 |\n\n## B\n\n| b |\n|---:|\n| 2 |\n\n"
        "<!-- table: pattern -->\n| c |\n|---|\n<!-- /table -->\n"
    )
    assert unbacked_tables(doc) == [11]  # B's table: the mark covers only its own section


def test_check_docs_command_passes_on_the_committed_docs(capsys):
    assert main(["--check-docs"]) == 0
    assert "matches" in capsys.readouterr().out


def test_the_training_parity_table_and_chart_read_the_committed_runs(tmp_path):
    """One row per model of each parity run (Encore's and the control's), rendered from the JSON: a changed AUC in
    one run changes that model's row of that run only; the chart is drawn from the same files."""
    source = doc_tables.RESULTS / fuxictr_tables.FOLDER
    runs = sorted(source.glob(fuxictr_tables.PARITY_GLOB))
    rows = fuxictr_tables.parity_table(doc_tables.RESULTS)[2:]
    assert len(rows) == sum(len(json.loads(p.read_text())["results"]) for p in runs) >= 2 * 9
    assert any("| Encore |" in r for r in rows) and any("| FuxiCTR, 1e-7 apart |" in r for r in rows)

    shutil.copytree(source, tmp_path / fuxictr_tables.FOLDER)
    encore_run = next(
        p for p in (tmp_path / fuxictr_tables.FOLDER).glob(fuxictr_tables.PARITY_GLOB) if "control" not in p.name
    )
    run = json.loads(encore_run.read_text())
    run["results"]["AFM"]["epochs"][-1]["valid_auc_other"] -= 0.01
    encore_run.write_text(json.dumps(run))
    changed = [(a, b) for a, b in zip(rows, fuxictr_tables.parity_table(tmp_path)[2:], strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("| AFM | Encore |")
    assert fuxictr_tables.parity_chart_png(doc_tables.RESULTS).startswith(b"\x89PNG\r\n\x1a\n")
