"""encore.artifacts directly: what BundleBuilder publishes (all or nothing), CURRENT, Bundle.file, the spec-hash
check and BundleHolder before and after a load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encore.artifacts import (
    CURRENT,
    BundleBuilder,
    BundleError,
    BundleHolder,
    current_bundle_path,
    load_bundle,
    set_current,
)
from encore.io import write_json_atomic


def build(root: Path, bundle_id: str, value: float = 1.0, make_current: bool = True, **manifest: object) -> Path:
    with BundleBuilder(root, bundle_id, make_current=make_current) as builder:
        np.save(builder.path / "vectors.npy", np.full(3, value))
        write_json_atomic(builder.path / "meta.json", {"value": value})
        builder.manifest.update(manifest)
    return root / bundle_id


def entries(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_a_built_bundle_is_listed_current_and_loads(tmp_path: Path) -> None:
    path = build(tmp_path, "b1", feature_spec_hash="abc")
    assert entries(tmp_path) == {"b1", CURRENT}
    bundle = load_bundle(current_bundle_path(tmp_path))
    assert bundle.id == "b1" and bundle.path == path
    assert set(bundle.manifest["files"]) == {"vectors.npy", "meta.json"}
    assert bundle.file("meta.json") == path / "meta.json"
    with pytest.raises(BundleError, match="no file 'other.json'"):
        bundle.file("other.json")
    assert load_bundle(path, expect_spec_hash="abc").id == "b1"
    with pytest.raises(BundleError, match="built for feature spec abc, expected xyz"):
        load_bundle(path, expect_spec_hash="xyz")


def test_a_failed_build_publishes_nothing_and_current_stays(tmp_path: Path) -> None:
    build(tmp_path, "b1")
    with pytest.raises(RuntimeError, match="training failed"):
        with BundleBuilder(tmp_path, "b2") as builder:
            np.save(builder.path / "vectors.npy", np.ones(3))
            raise RuntimeError("training failed")
    with pytest.raises(BundleError, match="only"):
        with BundleBuilder(tmp_path, "b3") as builder:
            (builder.path / "model.pkl").write_bytes(b"\x80\x04N.")  # pickle: never in a bundle
    assert entries(tmp_path) == {"b1", CURRENT}  # no half-written folder, no temp folder left behind
    assert current_bundle_path(tmp_path).name == "b1"


def test_rebuilding_an_id_replaces_it_and_make_current_false_leaves_current(tmp_path: Path) -> None:
    build(tmp_path, "b1", value=1.0)
    build(tmp_path, "b1", value=2.0)
    assert json.loads((tmp_path / "b1" / "meta.json").read_text()) == {"value": 2.0}
    assert load_bundle(tmp_path / "b1").id == "b1"
    build(tmp_path, "b2", make_current=False)
    assert current_bundle_path(tmp_path).name == "b1"
    set_current(tmp_path, "b2")
    assert current_bundle_path(tmp_path).name == "b2"


@pytest.mark.parametrize("bad", ["", "../b", "a/b", ".hidden", "b1\n", "x" * 129])
def test_a_bad_bundle_id_is_refused_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    with pytest.raises(BundleError, match="bad bundle id"):
        BundleBuilder(tmp_path / "artifacts", bad)
    assert not (tmp_path / "artifacts").exists()


def test_the_holder_serves_nothing_until_a_load_then_swaps_whole_states(tmp_path: Path) -> None:
    holder: BundleHolder[float] = BundleHolder(lambda b: float(np.load(b.file("vectors.npy")).sum()))
    assert not holder.loaded and holder.bundle is None
    with pytest.raises(BundleError, match="no bundle loaded"):
        _ = holder.state
    holder.reload(build(tmp_path, "b1", value=1.0))
    assert holder.loaded and holder.state == 3.0 and holder.bundle is not None and holder.bundle.id == "b1"
    holder.reload(build(tmp_path, "b2", value=2.0))
    assert holder.state == 6.0 and holder.bundle.id == "b2"
    with pytest.raises(BundleError, match="CURRENT|missing|b9"):
        holder.reload(tmp_path / "b9")
    assert holder.state == 6.0 and holder.bundle.id == "b2"  # the refused reload changed nothing
