"""extract_catalog: outputs, skipped items with reason codes, and resuming a finished or killed run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encore.audio.extract import (
    CONTENT_FILE,
    MANIFEST_FILE,
    encoder_fingerprint,
    extract_catalog,
    load_catalog,
)
from encore.audio.mfcc import MfccEncoder
from encore.io import sha256_file


class CountingMfcc(MfccEncoder):
    """The real encoder, counting how many tracks it actually encodes."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def encode(self, mono: np.ndarray) -> np.ndarray:
        self.calls += 1
        return super().encode(mono)


@pytest.fixture()
def catalog(tmp_path: Path, signals) -> dict[str, Path]:
    items = {}
    for i, freq in enumerate([220, 440, 880]):
        path = tmp_path / "audio" / f"tone{i}.flac"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(signals.sf_bytes(signals.sine(freq, 2.0, 44_100, 2), 44_100, "FLAC"))
        items[f"track/{i}"] = path  # ids with a slash: must not become sub-folders
    (tmp_path / "audio" / "silence.wav").write_bytes(signals.sf_bytes(np.zeros((8000, 1), np.float32), 8000, "WAV"))
    items["silent"] = tmp_path / "audio" / "silence.wav"
    items["missing"] = tmp_path / "audio" / "nope.mp3"
    return items


def test_extract_writes_arrays_and_manifest(catalog, tmp_path):
    encoder = CountingMfcc()
    content = extract_catalog(catalog, encoder, tmp_path / "out", progress=False)
    assert content == tmp_path / "out" / CONTENT_FILE
    track_ids, layers, manifest = load_catalog(tmp_path / "out")
    assert track_ids == ["track/0", "track/1", "track/2"]
    assert layers.shape == (3, 264) and layers.dtype == np.float32  # one layer, flat
    # Each stored vector is exactly what the encoder gives for that file.
    from encore.audio.decode import decode_audio

    direct = MfccEncoder().encode_decoded(decode_audio(catalog["track/1"].read_bytes(), max_seconds=None))
    np.testing.assert_array_equal(layers[1], direct)
    assert manifest["encoder"] == encoder.describe()
    assert manifest["counts"] == {"items": 5, "encoded": 3, "reused": 0, "skipped": 2}
    assert {s["track_id"]: s["code"] for s in manifest["skipped"]} == {
        "silent": "silent",
        "missing": "unreadable",
    }
    assert manifest["files"][CONTENT_FILE]["sha256"] == sha256_file(content)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_second_run_skips_finished_tracks(catalog, tmp_path):
    extract_catalog(catalog, CountingMfcc(), tmp_path / "out", progress=False)
    first = load_catalog(tmp_path / "out")[1]
    again = CountingMfcc()
    extract_catalog(catalog, again, tmp_path / "out", progress=False)
    assert again.calls == 0
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["counts"]["reused"] == 3
    np.testing.assert_array_equal(load_catalog(tmp_path / "out")[1], first)
    # resume=False starts over.
    fresh = CountingMfcc()
    extract_catalog(catalog, fresh, tmp_path / "out", resume=False, progress=False)
    assert fresh.calls == 3


def test_killed_run_continues_from_its_work_dir(catalog, tmp_path):
    # Simulate a run killed after one track: only that track's vector is in the work dir.
    encoder = CountingMfcc()
    extract_catalog({"track/0": catalog["track/0"]}, encoder, tmp_path / "out", progress=False)
    work = tmp_path / "out" / "work" / encoder_fingerprint(encoder.describe())
    (done,) = list(work.glob("*.npy"))
    marker = np.full(264, 7.0, np.float32)  # proves the stored vector is reused, not recomputed
    np.save(done, marker)
    (tmp_path / "out" / CONTENT_FILE).unlink()
    (tmp_path / "out" / MANIFEST_FILE).unlink()
    (work / "garbage.npy.tmp").write_bytes(b"partial write")  # what a kill mid-write leaves behind

    resumed = CountingMfcc()
    extract_catalog(catalog, resumed, tmp_path / "out", progress=False)
    assert resumed.calls == 2
    track_ids, layers, _ = load_catalog(tmp_path / "out")
    np.testing.assert_array_equal(layers[track_ids.index("track/0")], marker)
    # A corrupt per-track file is recomputed, not trusted.
    done.write_bytes(b"not a npy file")
    again = CountingMfcc()
    extract_catalog(catalog, again, tmp_path / "out", progress=False)
    assert again.calls == 1


def test_a_different_encoder_does_not_reuse_vectors(catalog, tmp_path):
    extract_catalog(catalog, CountingMfcc(), tmp_path / "out", progress=False)
    other = CountingMfcc(n_mels=32)
    extract_catalog(catalog, other, tmp_path / "out", progress=False)
    assert other.calls == 3
    _, layers, manifest = load_catalog(tmp_path / "out")
    assert layers.shape == (3, other.dim) and manifest["encoder"]["params"]["n_mels"] == 32
    # Nor does another decode length: those vectors describe a different part of each track.
    shorter = CountingMfcc(n_mels=32)
    extract_catalog(catalog, shorter, tmp_path / "out", max_seconds=1.0, progress=False)
    assert shorter.calls == 3 and load_catalog(tmp_path / "out")[2]["max_seconds"] == 1.0


def test_tampered_arrays_are_refused(catalog, tmp_path):
    extract_catalog(catalog, MfccEncoder(), tmp_path / "out", progress=False)
    with open(tmp_path / "out" / CONTENT_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ValueError, match="checksum"):
        load_catalog(tmp_path / "out")
