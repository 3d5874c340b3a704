"""Store.write_lock: one holder at a time across Store instances (each stands for a process), SQLite and Redis."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from encore.store import Store, StoreError, StoreSettings


def _settings(kind: str, tmp_path: Path, redis_url: str | None) -> StoreSettings:
    project = f"lock_{uuid.uuid4().hex[:8]}"
    if kind in ("redis", "redis_cluster"):
        return StoreSettings(tmp_path, project, kind, redis_url or "")
    return StoreSettings(tmp_path, project, "sqlite")


@pytest.fixture(params=["sqlite", "redis", "redis_cluster"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    redis_url = {
        "redis": lambda: request.getfixturevalue("redis_url"),
        "redis_cluster": lambda: request.getfixturevalue("redis_cluster").url,
    }.get(request.param, lambda: None)()
    return _settings(request.param, tmp_path, redis_url)


def test_a_held_lock_excludes_other_stores_until_released(settings: StoreSettings) -> None:
    first, second = Store(settings), Store(settings)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first.write_lock("track:abc"):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    with pytest.raises(StoreError, match="still held"):
        with second.write_lock("track:abc", timeout_s=0.2):
            pass
    with second.write_lock("track:other", timeout_s=0.2):  # another name is a different lock
        pass
    release.set()
    holder.join(10)
    with second.write_lock("track:abc", timeout_s=2):
        pass


def test_lock_names_never_become_paths(tmp_path: Path) -> None:
    store = Store(_settings("sqlite", tmp_path, None))
    with store.write_lock("track:../../escape"):
        pass
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(p.parent == tmp_path / ".locks" and len(p.stem) == 32 for p in files)
