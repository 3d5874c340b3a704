"""The bundle-watch sidecar (deploy/k8s) against a real retriever process: CURRENT moves, the service follows;
a corrupt bundle is refused once and the good one keeps serving; the next good bundle is taken again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from encore.artifacts import set_current
from encore.store import Store
from services.common.bundle_watch import Watcher, served_bundle
from tests.conftest import service_process
from tests.services.retriever.conftest import API_KEY, corrupt, write_bundle
from training.train_recall import RecallArtifacts


def _settle(watcher: Watcher, steps: int = 20) -> list[str]:
    """Steps until the watcher has nothing left to do (one reload is synchronous, so this ends quickly)."""
    seen = []
    for _ in range(steps):
        seen.append(watcher.step())
        if seen[-1] in ("in-step", "skipped"):
            break
        time.sleep(0.1)
    return seen


def test_watcher_keeps_a_real_service_on_current(
    artifacts_root: Path, store: Store, trained: RecallArtifacts, tmp_path: Path
) -> None:
    env = os.environ | {
        "ENCORE_ARTIFACTS_DIR": str(artifacts_root),
        "ENCORE_API_KEY": API_KEY,
        "ENCORE_FEAST_DATA_DIR": str(store.settings.data_dir),
        "ENCORE_FEAST_PROJECT": store.settings.project,
        "ENCORE_RETRIEVER_REFRESH_S": "0",
    }
    assert Watcher(tmp_path / "empty", "http://127.0.0.1:9", API_KEY).step() == "no-current"
    with service_process("retriever", env) as url:
        watcher = Watcher(artifacts_root, url, API_KEY)
        assert watcher.step() == "in-step"  # the service loaded CURRENT (b1) itself at start-up

        write_bundle(artifacts_root, "b2", trained)  # CURRENT -> b2
        assert _settle(watcher)[:2] == ["reloaded", "in-step"]
        assert served_bundle(url) == "b2"
        assert (
            httpx.get(f"{url}/candidates", params={"user_id": str(trained.user_ids[0]), "k": 3}).json()["bundle_id"]
            == "b2"
        )

        bad = write_bundle(artifacts_root, "b3", trained)  # CURRENT -> a bundle whose checksum fails
        corrupt(bad / "retriever" / "item_vectors.npy")
        assert _settle(watcher)[:2] == ["refused", "skipped"]  # asked once, not again
        assert served_bundle(url) == "b2"

        write_bundle(artifacts_root, "b4", trained, make_current=False)
        set_current(artifacts_root, "b4")
        assert _settle(watcher)[:2] == ["reloaded", "in-step"]
        assert served_bundle(url) == "b4"
    assert watcher.step() == "unreachable"  # the service is gone: nothing to do but try again later
