"""encore.artifacts and encore.bundle_check on small real bundles: what the builder records, and how loading
confines a bundle (sizes before checksums, one message for missing or mismatched, ONNX external data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from encore.artifacts import (
    MANIFEST_VERSION,
    BundleBuilder,
    BundleError,
    BundleHolder,
    current_bundle_path,
    load_bundle,
)
from encore.bundle_check import read_confined_manifest, verify_checksums
from encore.io import write_json_atomic
from encore.onnx_external import OnnxParseError, external_data_locations
from tests.factories import clone_bundle, edit_manifest, relist

ONNX = "graph/model.onnx"


def save_onnx(path: Path, external: str | None = None) -> None:
    """y = x + w with a 4-float initializer w; `external`: w's bytes go to that file, relative to the model
    (written by hand: the onnx package refuses to write a location with '..', which a tampered bundle may hold)."""
    weights = np.arange(4, dtype=np.float32)
    w = numpy_helper.from_array(weights, "w")
    if external is not None:
        (path.parent / external).parent.mkdir(parents=True, exist_ok=True)
        (path.parent / external).write_bytes(weights.tobytes())
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for key, value in {"location": external, "offset": "0", "length": str(weights.nbytes)}.items():
            entry = w.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def build(root: Path, bundle_id: str = "b1", external: str | None = None, **manifest: object) -> Path:
    with BundleBuilder(root, bundle_id) as builder:
        (builder.path / "tables").mkdir()
        np.save(builder.path / "tables" / "vectors.npy", np.ones(3))
        write_json_atomic(builder.path / "tables" / "meta.json", {"dim": 3})
        save_onnx(builder.path / ONNX, external)
        builder.manifest.update(manifest)
    return root / bundle_id


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


def test_the_builder_records_version_sizes_and_checksums_and_the_bundle_loads(root: Path) -> None:
    bundle = load_bundle(build(root))
    assert bundle.manifest["manifest_version"] == MANIFEST_VERSION
    assert set(bundle.manifest["files"]) == {"tables/vectors.npy", "tables/meta.json", ONNX}
    assert all(bundle.manifest["sizes"][r] == (bundle.path / r).stat().st_size for r in bundle.manifest["files"])
    assert load_bundle(current_bundle_path(root)).id == "b1"


def test_the_builder_refuses_unknown_manifest_fields_and_publishes_nothing(root: Path) -> None:
    with pytest.raises(BundleError, match=r"unknown manifest field\(s\) \['notes'\]"):
        build(root, notes="x")
    with pytest.raises(BundleError, match=r"unknown component\(s\) \['reranker'\]"):
        build(root, components={"reranker": {}})
    assert not root.exists() or sorted(os.listdir(root)) == []


def test_a_wrong_size_is_refused_before_any_file_is_hashed(root: Path) -> None:
    good = build(root)
    big = clone_bundle(good, root, "big")
    with open(big / "tables" / "vectors.npy", "r+b") as fh:
        fh.truncate(8 << 30)  # sparse: 8 GiB on paper, nothing on disk
    # The structural pass (no hashing) already refuses it ...
    with pytest.raises(BundleError, match="tables/vectors.npy is missing or does not match the manifest"):
        read_confined_manifest(big)
    # ... while a same-size change passes that pass and only the checksums catch it.
    flipped = clone_bundle(good, root, "flipped")
    data = bytearray((flipped / ONNX).read_bytes())
    data[-1] ^= 1
    (flipped / ONNX).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="graph/model.onnx is missing or does not match the manifest"):
        verify_checksums(flipped, read_confined_manifest(flipped))


def test_missing_resized_and_changed_files_get_the_same_message(root: Path) -> None:
    good = build(root)
    messages = []
    for name, tamper in {
        "gone": lambda p: p.unlink(),
        "resized": lambda p: p.write_bytes(p.read_bytes() + b"\0"),
        "changed": lambda p: p.write_bytes(bytes(b ^ 1 for b in p.read_bytes())),
    }.items():
        bundle = clone_bundle(good, root, name)
        tamper(bundle / ONNX)
        with pytest.raises(BundleError) as refused:
            load_bundle(bundle)
        messages.append(str(refused.value).replace(name, "<id>"))
    assert messages == ["bundle <id>: file graph/model.onnx is missing or does not match the manifest"] * 3


@pytest.mark.parametrize("listed", ["../../hostfile.json", "/abs/hostfile.json", "tables/../../hostfile.json"])
def test_a_listed_path_outside_the_bundle_is_refused_whether_or_not_the_host_file_exists(
    root: Path, listed: str
) -> None:
    good = build(root)
    messages = []
    for exists in (True, False):
        bundle = clone_bundle(good, root, f"out-{exists}")
        host = (bundle / listed).resolve() if not listed.startswith("/") else root.parent / "abs" / "hostfile.json"
        if exists:
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text("{}")
        doc = json.loads((bundle / "manifest.json").read_text())
        edit_manifest(bundle, files={**doc["files"], listed: "0" * 64}, sizes={**doc["sizes"], listed: 2})
        with pytest.raises(BundleError) as refused:
            load_bundle(bundle)
        messages.append(str(refused.value).replace(bundle.name, "<id>"))
        assert str(root.parent) not in str(refused.value)
    assert messages[0] == messages[1] and "is not a plain path inside the bundle" in messages[0]


def test_special_files_and_symlinked_folders_inside_a_bundle_are_refused(root: Path, tmp_path: Path) -> None:
    good = build(root)
    fifo = clone_bundle(good, root, "fifo")
    os.mkfifo(fifo / "tables" / "pipe.npy")
    with pytest.raises(BundleError, match="tables/pipe.npy is not a plain file"):
        load_bundle(fifo)
    linked = clone_bundle(good, root, "linked-dir")
    (tmp_path / "elsewhere").mkdir()
    (linked / "more").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BundleError, match="more is a symlink"):
        load_bundle(linked)


def test_current_must_be_a_plain_file_naming_a_bundle(root: Path, tmp_path: Path) -> None:
    build(root)
    (tmp_path / "pointer").write_text("b1\n")
    (root / "CURRENT").unlink()
    (root / "CURRENT").symlink_to(tmp_path / "pointer")
    with pytest.raises(BundleError, match="CURRENT is missing or not a plain file"):
        current_bundle_path(root)


def test_a_version_1_manifest_is_refused_with_the_way_out(root: Path) -> None:
    bundle = build(root)
    edit_manifest(bundle, manifest_version=None, sizes=None)
    with pytest.raises(BundleError, match=r"manifest version 1, this Encore reads version 2 \(rebuild"):
        load_bundle(bundle)


def test_onnx_external_data_is_found_as_the_onnx_package_sees_it(tmp_path: Path) -> None:
    save_onnx(tmp_path / "inline.onnx")
    model = onnx.load(tmp_path / "inline.onnx")
    onnx.save_model(model, tmp_path / "outside.onnx", save_as_external_data=True, location="w.data", size_threshold=0)
    assert external_data_locations((tmp_path / "inline.onnx").read_bytes()) == []
    assert external_data_locations((tmp_path / "outside.onnx").read_bytes()) == ["w.data"]
    loaded = onnx.load(tmp_path / "outside.onnx", load_external_data=False)
    assert [e.value for t in loaded.graph.initializer for e in t.external_data if e.key == "location"] == ["w.data"]
    with pytest.raises(OnnxParseError):
        external_data_locations(b"\x0f not a protobuf")


def test_listed_onnx_external_data_loads_and_unlisted_or_outside_data_is_refused(root: Path) -> None:
    listed = load_bundle(build(root, "listed", external="model.onnx.data"))
    assert "graph/model.onnx.data" in listed.manifest["files"]

    unlisted = clone_bundle(listed.path, root, "unlisted")
    doc = json.loads((unlisted / "manifest.json").read_text())
    kept = {k: {r: v for r, v in doc[k].items() if r != "graph/model.onnx.data"} for k in ("files", "sizes")}
    edit_manifest(unlisted, **kept)
    with pytest.raises(BundleError, match="graph/model.onnx.data is in the folder but not in the manifest"):
        load_bundle(unlisted)

    outside = clone_bundle(build(root, "plain"), root, "outside")
    save_onnx(outside / ONNX, external="../../weights.data")  # writes root/weights.data, outside the bundle
    relist(outside, ONNX)
    with pytest.raises(BundleError, match="graph/model.onnx reads external data '../../weights.data', not listed"):
        load_bundle(outside)


def test_a_data_file_no_graph_reads_is_refused(root: Path) -> None:
    bundle = clone_bundle(build(root), root, "stray")
    (bundle / "tables" / "extra.data").write_bytes(b"\0" * 16)
    relist(bundle, "tables/extra.data")
    with pytest.raises(BundleError, match="tables/extra.data is not the external data of a listed ONNX graph"):
        load_bundle(bundle)


def test_a_refused_reload_keeps_the_old_state_and_names_no_host_path(root: Path) -> None:
    holder: BundleHolder[str] = BundleHolder(lambda bundle: bundle.id)
    holder.reload(build(root))
    broken = clone_bundle(root / "b1", root, "broken")
    (broken / "tables" / "meta.json").write_text("{not json")
    relist(broken, "tables/meta.json")
    with pytest.raises(BundleError) as refused:
        holder.reload(broken)
    assert str(refused.value) == "bundle broken: tables/meta.json does not load as json (JSONDecodeError)"
    assert holder.state == "b1"
