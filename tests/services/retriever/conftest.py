"""Fixtures: one BPR model trained on a planted play log, written as real bundles; a real SQLite store."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from encore.artifacts import BundleBuilder
from encore.store import Store, StoreSettings
from tests.services.retriever.planted import ENCODER, Planted, make_planted
from training.train_recall import RecallArtifacts, train_bpr

API_KEY = "test-key"


@pytest.fixture(scope="session")
def planted() -> Planted:
    return make_planted()


@pytest.fixture(scope="session")
def trained(planted: Planted) -> RecallArtifacts:
    return train_bpr(planted.interactions, (planted.track_ids, planted.content), encoder=ENCODER, dim=32, epochs=20)


def write_bundle(root: Path, bundle_id: str, artifacts: RecallArtifacts, make_current: bool = True) -> Path:
    with BundleBuilder(root, bundle_id, make_current=make_current) as builder:
        artifacts.component().write(builder)
    return root / bundle_id


def corrupt(path: Path) -> None:
    """Flip one byte in the middle of a file (the manifest's checksum no longer matches)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def artifacts_root(tmp_path: Path, trained: RecallArtifacts) -> Path:
    """An artifacts dir whose CURRENT is bundle b1."""
    root = tmp_path / "artifacts"
    write_bundle(root, "b1", trained)
    return root


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """An applied SQLite store with nothing in it; tests push what they need (ids unique per test)."""
    data_dir = tmp_path_factory.mktemp("feast")
    store = Store(StoreSettings(data_dir=data_dir, project=f"retriever_{uuid.uuid4().hex[:10]}"))
    store.apply()
    yield store
    shutil.rmtree(data_dir, ignore_errors=True)
