"""`make run`'s printed examples work in a fresh clone: a known user, and an audio file that exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import stack


def test_the_upload_example_falls_back_to_a_rendered_demo_track(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = tmp_path / "data" / "synthetic" / "abc123" / "audio" / "000000.flac"
    rendered.parent.mkdir(parents=True)
    rendered.write_bytes(b"fLaC")
    monkeypatch.setenv("ENCORE_DATASETS_DIR", str(tmp_path / "shared" / "data"))  # not there yet
    monkeypatch.setenv("ENCORE_CACHE_DIR", str(tmp_path / "data"))
    assert stack.example_audio() == rendered
    shared = tmp_path / "shared" / "data" / "audio" / "gtzan_country.00000.wav"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"RIFF")
    assert stack.example_audio() == shared  # a real clip wins when ../shared is there
