"""training.extract_audio over a folder of audio with a pretrained encoder: manifest, resume, readable errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from encore.audio.extract import load_catalog
from encore.audio.random_weights import write_random_weights
from training.extract_audio import main


@pytest.fixture()
def audio_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    t = np.arange(44_100 * 3) / 44_100
    sf.write(folder / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 44_100)
    sf.write(folder / "sub" / "b.flac", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 44_100)
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_extract_a_folder_with_muq_writes_the_sidecar_manifest_and_resumes(audio_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    write_random_weights(weights, "muq", size="tiny")
    args = ["--audio-dir", str(audio_dir), "--out", str(tmp_path / "out"), "--encoder", "muq"]
    args += ["--weights-dir", str(weights), "--runtime", "torch", "--no-progress"]
    assert main(args) == 0
    track_ids, layers, manifest = load_catalog(tmp_path / "out")
    assert track_ids == ["a", "sub/b"] and layers.shape == (2, 96)
    encoder = manifest["encoder"]
    assert (encoder["backend"], encoder["sample_rate"], encoder["window_seconds"]) == ("muq", 24_000, 10.0)
    assert encoder["params"] == {"layers": [1, 2, 3], "precision": "fp32"} and manifest["runtime"] == "torch"
    assert encoder["revision"].startswith("sha256.") and "repeating the track" in encoder["window_policy"]
    assert "layers 1..N" in encoder["pooling"]
    assert main(args) == 0  # a second run reuses every finished vector
    _, again, manifest = load_catalog(tmp_path / "out")
    assert manifest["counts"]["reused"] == 2
    np.testing.assert_array_equal(again, layers)


def test_missing_encoder_weights_or_arguments_exit_with_one_error_line(
    audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--audio-dir", str(audio_dir), "--out", str(tmp_path / "out"), "--encoder", "clap"]
    assert main([*args, "--weights-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: encoder 'clap' is not installed: {tmp_path}/clap lacks")
    assert main(["--audio-dir", str(audio_dir)]) == 2
    assert capsys.readouterr().err.strip() == "error: --audio-dir needs --out"
    assert not (tmp_path / "out").exists()
