"""Settings for any data: dataset config < preset < --config file < --set, checked before data is read."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from encore.errors import EncoreError
from training.config import build_config, check_config, dataset_config, model_options
from training.models.registry import get_ctr_model

ROOT = Path(__file__).resolve().parents[2]
MODELS = {name: get_ctr_model(name) for name in ("LR", "DeepFM", "DCNv2")}
OPTIONS = model_options(MODELS)


def test_layers_apply_in_order(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text("train:\n  lr: 2e-3\n  patience: 4\nmodels:\n  DeepFM:\n    model:\n      hidden_units: [64, 64]\n")
    config, layers = build_config(
        "synthetic", OPTIONS, "taste", file, ["train.patience=7", "models.DCNv2.train.embedding_l2=1e-4"]
    )
    assert config["train"]["lr"] == 0.002  # the file over the preset's 0.005
    assert config["train"]["batch_size"] == 2048 and config["train"]["patience"] == 7  # preset, then --set
    assert config["train"]["warmup_epochs"] == 10  # the dataset's config underneath
    assert config["models"]["DeepFM"]["model"]["hidden_units"] == [64, 64]
    assert config["models"]["DeepFM"]["model"]["dropout"] == 0.2  # the rest of the dataset's DeepFM stays
    assert config["models"]["DCNv2"]["train"]["embedding_l2"] == 1e-4
    assert layers[0] == "training/configs/synthetic.json" and layers[1] == "preset taste" and len(layers) == 5
    check_config(config, MODELS)


def test_bars_is_todays_frappe_settings_on_any_dataset():
    config, _ = build_config("synthetic", OPTIONS, "bars")
    frappe = dataset_config("frappe")
    assert config["train"] == frappe["train"] and config["models"]["DeepFM"] == frappe["models"]["DeepFM"]


def test_the_taste_dataset_says_it_uses_the_taste_preset():
    config, layers = build_config("taste", OPTIONS)
    assert "preset taste" in layers
    assert (config["train"]["lr"], config["train"]["batch_size"], config["train"]["patience"]) == (0.005, 2048, 10)
    assert config["models"]["DCNv2"]["model"]["embedding_dim"] == 32


def test_a_wildcard_model_option_skips_models_that_do_not_take_it():
    config, _ = build_config("synthetic", OPTIONS, overrides=["model.embedding_dim=24"])
    assert config["models"]["DeepFM"]["model"]["embedding_dim"] == 24
    assert "embedding_dim" not in config["models"]["LR"]["model"]
    with pytest.raises(EncoreError, match="takes"):
        build_config("synthetic", OPTIONS, overrides=["model.no_such_option=1"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.learning_rate=0.1"], "unknown training setting"),
        (["models.DeepFM.model.depth=3"], "DeepFM does not take ['depth']"),
        (["lr=0.1"], "a key starts with"),
        (["train.lr"], "KEY=VALUE"),
    ],
)
def test_bad_settings_fail_in_one_line(overrides, message):
    with pytest.raises(EncoreError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config, _ = build_config("synthetic", OPTIONS, overrides=overrides)
        check_config(config, MODELS)


def run_cli(*args):
    cmd = [sys.executable, str(ROOT / "training" / "run_benchmark.py"), "--threads", "1", "--no-progress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_cli_refuses_a_bad_setting_before_reading_data(tmp_path):
    proc = run_cli("--dataset", "frappe", "--models", "DeepFM", "--set", "models.DeepFM.model.depth=3",
                   "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: DeepFM does not take")
    assert not (tmp_path / "out").exists()


def test_tuning_resumes_its_study_and_writes_a_config_the_benchmark_reads(tmp_path):
    out = tmp_path / "tune"
    common = ("--dataset", "synthetic", "--quick", "--features", "id", "--models", "FM", "--epochs", "1")
    first = run_cli(*common, "--tune", "2", "--out", str(out))
    assert first.returncode == 0, first.stderr
    again = run_cli(*common, "--tune", "3", "--out", str(out))  # the study's total: one more trial
    assert again.returncode == 0, again.stderr
    assert "2 finished trial(s)" in again.stderr
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 3 and trials.value.between(0.5, 1.0).all()
    best = json.loads((out / "best.json").read_text())
    assert set(best["models"]["FM"]["train"]) == {"lr", "batch_size", "embedding_l2"}
    assert set(best["models"]["FM"]["model"]) == {"embedding_dim"}  # FM takes no dropout or hidden units
    run = run_cli(*common, "--config", str(out / "best.json"), "--out", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "run" / "manifests.jsonl").read_text().splitlines()[0])
    assert manifest["train_config"]["lr"] == best["models"]["FM"]["train"]["lr"]
    assert manifest["model_config"]["embedding_dim"] == best["models"]["FM"]["model"]["embedding_dim"]
