"""MusiCNN weights: the numpy TF-checkpoint reader and the wheel -> weights/musicnn-{msd,mtt} conversion, on the
real cached wheel, plus its refusals (wrong wheel, no network, corrupt checkpoint) leaving nothing behind."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from encore.audio.musicnn_weights import WHEEL_NAME, WeightsError, main, tf_to_torch
from encore.audio.tf_checkpoint import CheckpointError, read_checkpoint, read_index

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_COMMAND = "python -m encore.audio.musicnn_weights --out weights (make install runs it)"


@pytest.fixture(scope="module")
def wheel() -> Path:
    path = ROOT / ".cache" / "wheels" / WHEEL_NAME
    if not path.is_file():
        pytest.fail(f"no musicnn wheel at {path}: run {WEIGHTS_COMMAND} (add --force if weights/ exists)")
    return path


@pytest.fixture(scope="module")
def msd_checkpoint(wheel: Path) -> tuple[bytes, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("musicnn/MSD_musicnn/.index"), zf.read("musicnn/MSD_musicnn/.data-00000-of-00001")


def test_reader_finds_every_variable_with_its_shape(msd_checkpoint: tuple[bytes, bytes]) -> None:
    tensors = read_checkpoint(*msd_checkpoint)
    assert len(tensors) == 150  # 64 model variables + 2 x 42 Adam slots of the trainable ones + 2 beta powers
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204) and tensors["conv2d/kernel"].dtype == np.float32
    assert tensors["conv2d_1/kernel"].shape == (7, 67, 1, 204)
    assert [tensors[f"conv2d_{i}/kernel"].shape[0] for i in (2, 3, 4)] == [128, 64, 32]
    assert tensors["dense/kernel"].shape == (1506, 200) and tensors["dense_1/kernel"].shape == (200, 50)
    model = {k: v for k, v in tensors.items() if "Adam" not in k and "_power" not in k}
    assert sum(v.size for v in model.values()) == 787_159 + 4_920  # trainable + batch-norm moving statistics
    assert np.isfinite(tensors["batch_normalization_9/moving_variance"]).all()
    assert (tensors["batch_normalization_9/moving_variance"] > 0).all()


def test_reader_refuses_what_is_not_a_checkpoint(msd_checkpoint: tuple[bytes, bytes]) -> None:
    index, data = msd_checkpoint
    with pytest.raises(CheckpointError, match="bad table magic"):
        read_index(b"\0" * 100)
    with pytest.raises(CheckpointError, match="do not fit"):
        read_checkpoint(index, data[: len(data) // 2])


def test_conversion_skips_adam_and_refuses_a_partial_checkpoint(msd_checkpoint: tuple[bytes, bytes]) -> None:
    tensors = read_checkpoint(*msd_checkpoint)
    state = tf_to_torch(tensors)
    assert len(state) == 64 and not any("Adam" in k for k in state)
    assert state["timbral.0.conv.weight"].shape == (204, 1, 7, 38)  # (out, in, time, freq)
    assert state["mid.0.conv.weight"].shape == (64, 561, 7) and state["head.weight"].shape == (50, 200)
    np.testing.assert_array_equal(state["dense.weight"], tensors["dense/kernel"].T)
    del tensors["conv2d_5/kernel"]
    with pytest.raises(WeightsError, match="not a MusiCNN checkpoint"):
        tf_to_torch(tensors)


def test_command_writes_both_folders_from_the_wheel(wheel: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "weights"
    assert main(["--out", str(out), "--wheel", str(wheel)]) == 0
    for head, sample_tags in (("msd", {"rock", "jazz", "Hip-Hop"}), ("mtt", {"classical", "piano", "drums"})):
        folder = out / f"musicnn-{head}"
        assert sorted(p.name for p in folder.iterdir()) == [
            "LICENSE.md",
            "config.json",
            "encore.json",
            "model.safetensors",
        ]
        config = json.loads((folder / "config.json").read_text())
        assert config["layer_dims"] == [561, 64, 64, 64, 200] and len(config["tags"]) == 50
        assert sample_tags <= set(config["tags"]) and config["checkpoint"] == f"{head.upper()}_musicnn"
        source = json.loads((folder / "encore.json").read_text())
        assert source["revision"].startswith(f"musicnn-0.1.0.{head.upper()}_musicnn.") and source["license"] == "ISC"
        assert len(load_file(str(folder / "model.safetensors"))) == 64
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    capsys.readouterr()
    assert main(["--out", str(out), "--wheel", str(wheel)]) == 0  # folders there: kept, nothing downloaded
    assert capsys.readouterr().out.count("already there") == 2


def _assert_one_error_line(capsys, fragment: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_a_wrong_wheel_is_refused_and_nothing_is_written(tmp_path: Path, capsys) -> None:
    fake = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("musicnn/configuration.py", "MTT_LABELS = []\n")
    out = tmp_path / "weights"
    assert main(["--out", str(out), "--wheel", str(fake)]) == 2
    _assert_one_error_line(capsys, "is not the musicnn==0.1.0 wheel from PyPI")
    assert not out.exists()


def test_no_network_ends_in_one_error_line_and_nothing_is_written(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, cache = tmp_path / "weights", tmp_path / "cache"
    # Only the unreachable index: no pip config files, local wheel folders or extra indexes.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    code = main(["--out", str(out), "--cache", str(cache), "--index-url", "http://127.0.0.1:9/simple"])
    assert code == 2
    _assert_one_error_line(capsys, "could not download musicnn==0.1.0")
    assert not out.exists() and not list(cache.iterdir())  # no wheel, no half-downloaded folder
