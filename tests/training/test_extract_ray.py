"""Catalog embedding on Ray (`training.extract_audio --engine ray`): real Ray Data, real decoding, MusiCNN's
ONNX encoder in the actor pool. The result equals the single-process path's; a run resumes from the same
work files; `--address` joins a running cluster."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from encore.audio.extract import load_catalog

pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "weights"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (WEIGHTS / "musicnn-msd").is_dir(), reason="MusiCNN weights missing (make install)"),
]


def _catalog(folder: Path, n: int = 6) -> Path:
    """n short WAV/FLAC files of distinct tones and noise, and one file that is not audio."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        t = np.arange(22050 * 4) / 22050
        wave = 0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / f"track{i}.{'flac' if i % 2 else 'wav'}", wave.astype(np.float32), 22050)
    (folder / "broken.wav").write_bytes(b"not audio at all")
    return folder


def _extract(audio: Path, out: Path, *extra: str) -> None:
    command = [
        sys.executable, "-m", "training.extract_audio", "--audio-dir", str(audio), "--out", str(out),
        "--encoder", "musicnn", "--weights-dir", str(WEIGHTS), "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip
    # One BLAS thread, as in Ray's workers: the encoders' numpy front end then sums in the same order.
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _parts(out: Path) -> list[str]:
    """Track ids in each run's parquet parts, one sorted list per run (oldest first)."""
    runs = sorted(glob.glob(str(out / "parts" / "*")))
    return [sorted(pq.read_table(run).column("track_id").to_pylist()) for run in runs]


def test_ray_engine_equals_the_single_process_path_and_resumes_on_a_cluster(tmp_path: Path) -> None:
    audio = _catalog(tmp_path / "audio")
    _extract(audio, tmp_path / "local")
    _extract(audio, tmp_path / "ray", "--engine", "ray", "--actors", "2")

    ids, layers, manifest = load_catalog(tmp_path / "local")
    ray_ids, ray_layers, ray_manifest = load_catalog(tmp_path / "ray")
    assert ids == ray_ids == [f"track{i}" for i in range(6)]
    np.testing.assert_array_equal(ray_layers, layers)  # bit for bit
    assert ray_manifest["encoder"] == manifest["encoder"]
    assert (
        [s["track_id"] for s in ray_manifest["skipped"]] == ["broken"] == [s["track_id"] for s in manifest["skipped"]]
    )
    all_ids = sorted([*ids, "broken"])
    assert _parts(tmp_path / "ray") == [all_ids]  # one parquet run holding every row, the failure included

    # Resume on a running cluster: drop one finished vector; the next run encodes only that track (and
    # tries the broken file again), joining the cluster this test started instead of starting its own.
    work = next((tmp_path / "ray" / "work").iterdir())
    finished = sorted(work.glob("*.npy"))
    assert len(finished) == 6
    finished[0].unlink()
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        _extract(audio, tmp_path / "ray", "--engine", "ray", "--address", context.address_info["gcs_address"])
    finally:
        ray.shutdown()
    runs = _parts(tmp_path / "ray")
    assert len(runs) == 2 and len(runs[1]) == 2 and "broken" in runs[1]
    again_ids, again_layers, _ = load_catalog(tmp_path / "ray")
    assert again_ids == ids
    np.testing.assert_array_equal(again_layers, layers)


def test_engine_flags_are_checked_before_any_work(tmp_path: Path) -> None:
    audio = _catalog(tmp_path / "audio", n=1)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for extra, message in ((["--address", "127.0.0.1:1"], "--address needs --engine ray"),
                           (["--engine", "ray", "--actors", "0"], "--actors must be >= 1")):  # fmt: skip
        command = [sys.executable, "-m", "training.extract_audio", "--audio-dir", str(audio), "--out",
                   str(tmp_path / "out"), "--encoder", "mfcc", *extra]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {message}"]
        assert not (tmp_path / "out").exists()
