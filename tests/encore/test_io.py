"""encore.io.atomic_path: readers see the old content or the new, never a half-written file or folder."""

from __future__ import annotations

import json
import stat

import pytest

from encore.io import atomic_path, write_json_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_appears_whole_with_readable_permissions(tmp_path):
    final = tmp_path / "sub" / "out.csv"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".out.csv.") and tmp.name.endswith(".tmp")
        tmp.write_text("a,b\n")
        assert not final.exists()  # nothing is visible until the block ends
    assert final.read_text() == "a,b\n"
    assert _mode(final) == 0o644
    assert sorted(p.name for p in final.parent.iterdir()) == ["out.csv"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    final = tmp_path / "out.json"
    write_json_atomic(final, {"v": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(final) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("disk full")
    assert json.loads(final.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_folder_replaces_the_old_one_whole(tmp_path):
    final = tmp_path / "runs" / "r1"
    final.mkdir(parents=True)
    (final / "stale.txt").write_text("old run")
    with atomic_path(final, directory=True) as tmp:
        (tmp / "manifest.json").write_text("{}")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "w.bin").write_bytes(b"\x00")
        assert (final / "stale.txt").exists()  # the old run is served until the new one is complete
    assert sorted(str(p.relative_to(final)) for p in final.rglob("*")) == ["manifest.json", "nested", "nested/w.bin"]
    assert _mode(final) == 0o755
    assert sorted(p.name for p in final.parent.iterdir()) == ["r1"]


def test_a_failed_folder_keeps_the_old_one_and_leaves_no_temp(tmp_path):
    final = tmp_path / "r1"
    final.mkdir()
    (final / "manifest.json").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final, directory=True) as tmp:
            (tmp / "manifest.json").write_text("new, half done")
            raise KeyboardInterrupt  # a Ctrl-C mid-save cleans up too
    assert (final / "manifest.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1"]
