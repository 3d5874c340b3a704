"""The encoder grid's tables: two result folders side by side with encoder-labelled content, and the token
ablation's (layers, K) read back from the variant."""

from __future__ import annotations

from training import encoder_tables
from training.results import ResultsTable

BASE = "default/random+cold20"


def _rows(content: str, gauc: float, variant: str = BASE, model: str = "DCNv2") -> list[dict]:
    return [
        {
            "dataset": "synthetic",
            "variant": variant,
            "model": model,
            "features": "id",
            "content": content,
            "seed": seed,
            "split": split,
            "auc": gauc + 0.05 + 0.001 * seed,
            "gauc": gauc + 0.001 * seed * seed,
            "logloss": 0.5,
            "run_dir": f"runs/{content}_{variant}_{seed}",
        }  # fmt: skip
        for seed in (1, 2, 3)
        for split in ("test", "cold")
    ]


def _folder(path, rows: list[dict]) -> None:
    """A results folder as the tables read it: its results.csv alone (no charts, no manifests: faster)."""
    table = ResultsTable(path)
    table.add(rows)
    path.mkdir(parents=True)
    table.rows.to_csv(table.csv_path, index=False)


def test_the_two_grids_become_one_table_with_encoder_labels(tmp_path):
    _folder(tmp_path / "encoder_grid_mfcc", _rows("none", 0.50) + _rows("dense", 0.68) + _rows("tokens", 0.66))
    _folder(tmp_path / "encoder_grid_musicnn", _rows("dense", 0.70) + _rows("tokens", 0.72))

    rows = encoder_tables.encoder_rows(tmp_path)
    assert set(rows.content) == set(encoder_tables.CONTENTS)
    table = encoder_tables.grid_table(tmp_path, "cold")
    assert table[0].startswith("| features | model | none GAUC | MFCC dense GAUC | MFCC tokens GAUC")
    cells = table[2].split(" | ")
    assert cells[1] == "DCNv2"
    assert cells[2].startswith("0.5047") and cells[6].startswith("0.7247")  # none, MusiCNN tokens

    answer = "\n".join(encoder_tables.answer_table(tmp_path))
    # MusiCNN tokens beat MusiCNN dense by 0.02 in every seed: a difference, but no spread, so no p
    assert "| cold | GAUC | MusiCNN tokens - MusiCNN dense | 1 | +0.0200 | 1 / 0 |" in answer
    assert "| cold | GAUC | MFCC tokens - MFCC dense | 1 | -0.0200 | 0 / 1 |" in answer


def test_the_ablation_reads_layers_and_k_from_the_variant_and_adds_the_grid_default(tmp_path):
    _folder(tmp_path / "encoder_grid_mfcc", _rows("none", 0.50))
    _folder(tmp_path / "encoder_grid_musicnn", _rows("tokens", 0.72) + _rows("dense", 0.70))
    ablation = _rows("tokens", 0.61, f"{BASE}+tok-k16-last1") + _rows("tokens", 0.64, f"{BASE}+tok-k64-last3")
    _folder(tmp_path / encoder_tables.ABLATION_FOLDER, ablation)

    rows = encoder_tables.ablation_rows(tmp_path)
    cold = rows[rows.split == "cold"].groupby(["layers", "k"]).gauc.mean().round(4)
    assert cold.to_dict() == {("all", 32): 0.7247, ("last1", 16): 0.6147, ("last3", 64): 0.6447}
    assert set(rows.content) == {"tokens"}  # the grid's dense cells stay out

    table = encoder_tables.ablation_table(tmp_path, "cold")
    lines = {line.split(" | ")[2]: line for line in table[2:]}
    assert lines["last1"].split(" | ")[3].startswith("0.6147 ± ")
    assert lines["all"].split(" | ")[4].startswith("0.7247 ± ")
    assert lines["last3"].endswith("| – | – | 0.6447 ± 0.0040 |")


def test_the_chart_draws_from_the_folders(tmp_path):
    _folder(tmp_path / "encoder_grid_mfcc", _rows("none", 0.50) + _rows("dense", 0.68) + _rows("tokens", 0.66))
    _folder(tmp_path / "encoder_grid_musicnn", _rows("dense", 0.70) + _rows("tokens", 0.72))
    png = encoder_tables.chart_png(tmp_path)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
