"""Merging grids run as separate processes: every cell once, the first source winning on overlap."""

import pandas as pd

from training.results import COLUMNS, ResultsTable, merge


def write_rows(folder, cells):
    table = ResultsTable(folder)
    table.add([
        {"dataset": "d", "variant": "v", "model": m, "features": f, "content": "none", "seed": s,
         "split": "test", "auc": auc, "logloss": 0.5, "train_samples_per_s": 1.0, "best_epoch": 1}
        for m, f, s, auc in cells
    ])  # fmt: skip
    table.write()


def test_merge_keeps_each_cell_once_and_renders_tables(tmp_path):
    write_rows(tmp_path / "a", [("DeepFM", "id", 1, 0.70), ("DeepFM", "id+cat", 1, 0.80)])
    write_rows(tmp_path / "b", [("DeepFM", "id+cat", 1, 0.99), ("DeepFM", "id+cat+num", 1, 0.85)])
    merge([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(rows.columns) == COLUMNS
    assert sorted(zip(rows.features, rows.auc, strict=True)) == [("id", 0.7), ("id+cat", 0.8), ("id+cat+num", 0.85)]
    assert "| id+cat | DeepFM | 0.8000 (1 seed) |" in (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "out" / "results.png").stat().st_size > 0
    assert not (tmp_path / "out" / "lift.png").exists()  # only `none`: no gain to draw


def test_pattern_counts_say_where_tastes_order_holds(tmp_path):
    table = ResultsTable(tmp_path)
    aucs = {  # (features, model) -> none, dense, tokens
        ("id", "DeepFM"): (0.60, 0.70, 0.65),
        ("id", "DCNv2"): (0.60, 0.55, 0.68),
        ("id+cat", "DeepFM"): (0.70, 0.69, 0.71),
    }
    table.add([
        {"dataset": "d", "variant": "v", "model": m, "features": f, "content": c, "seed": s, "split": "cold",
         "auc": auc + 0.001 * s, "logloss": 0.5, "train_samples_per_s": 1.0, "best_epoch": 1}
        for (f, m), values in aucs.items()
        for c, auc in zip(["none", "dense", "tokens"], values, strict=True)
        for s in (1, 2)
    ])  # fmt: skip
    table.write()
    text = (tmp_path / "results.md").read_text()
    assert "| d (v) | cold | id | dense > none | 1 / 2 | +0.0250 | -0.0500 .. +0.1000 |" in text
    assert "| d (v) | cold | id | tokens > none | 2 / 2 |" in text
    assert "| d (v) | cold | id | tokens >= dense | 1 / 2 |" in text
    assert "| d (v) | cold | id+cat | dense > none | 0 / 1 | -0.0100 |" in text
    # Pooled over both feature settings: DeepFM id wins, DCNv2 id and DeepFM id+cat lose.
    assert "| d (v) | cold | all | dense > none | 1 / 3 |" in text
    assert (tmp_path / "lift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # gains over `none`, drawn
