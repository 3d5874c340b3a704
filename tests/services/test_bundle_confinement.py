"""Every tampered bundle is refused by all three services through their real POST /admin/reload, and the
bundle they served before keeps serving (issue 25: one bundle check shared by the ranker, retriever and embedder).

One real bundle holds every component (a DCNv2 ranker exported to ONNX, a BPR retriever, MFCC codebooks), so
each service loads the same folder; each case copies it and tampers with one thing.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from fastapi.testclient import TestClient

from encore import feature_names as fn
from encore.artifacts import BundleBuilder
from encore.audio import Codebooks, MfccEncoder
from encore.io import write_json_atomic
from encore.schema import FeatureSpec
from encore.settings import EmbedderSettings, RankerSettings, RetrieverSettings
from encore.store import Store, StoreSettings
from services.embedder.main import create_app as create_embedder
from services.ranker.main import create_app as create_ranker
from services.retriever.main import create_app as create_retriever
from tests.factories import clone_bundle, edit_manifest, externalize_onnx_weights, relist
from tests.services.embedder.helpers import tone
from tests.services.ranker.conftest import SPEC_FIELDS, make_source_frames, training_frame
from tests.services.retriever.planted import ENCODER, make_planted
from training.export import export_onnx
from training.models.ctr.dcnv2 import DCNv2
from training.train_recall import train_bpr, write_retriever_files

API_KEY = "test-key"
AUTH = {"X-API-Key": API_KEY}
GOOD = "good-1"
ONNX = "ranker/model.onnx"
VECTORS = "retriever/item_vectors.npy"


def write_full_bundle(root: Path) -> None:
    """GOOD, with the components all three services read, as training writes them."""
    frames = make_source_frames()
    spec = FeatureSpec.fit(training_frame(frames.users, frames.meta, frames.content, frames.interactions), SPEC_FIELDS)
    torch.manual_seed(0)
    ranker = DCNv2(spec, embedding_dim=4, num_cross_layers=1, hidden_units=(8,))  # untrained: scores suffice
    planted = make_planted()
    recall = train_bpr(planted.interactions, (planted.track_ids, planted.content), encoder=ENCODER, dim=8, epochs=2)
    encoder = MfccEncoder()
    layers = np.stack([encoder.encode(tone(f, 2.0, bpm=b)) for f in (110, 220, 440, 880) for b in (90, 150)])
    with BundleBuilder(root, GOOD) as builder:
        (builder.path / "ranker").mkdir()
        export_onnx(ranker, builder.path / ONNX)
        spec.save(builder.path / "ranker" / "spec.json")
        write_json_atomic(builder.path / "popularity.json", {"track_ids": frames.meta[fn.TRACK_ID].tolist()})
        Codebooks.fit(layers, encoder_info=encoder.describe(), k=4, seed=0).save(builder.path / "codebooks")
        builder.manifest.update(
            feature_spec_hash=spec.hash,
            components={
                "ranker": {"model": "DCNv2", "onnx": ONNX, "spec": "ranker/spec.json", "popularity": "popularity.json"},
                "retriever": write_retriever_files(recall, builder.path),
                "codebooks": {"dir": "codebooks", "encoder": encoder.describe()},
                "content": {"encoder": "mfcc", "dense_layer": "last", "standardize": True},
            },
        )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("confined") / "artifacts"
    write_full_bundle(root)
    return root


@pytest.fixture(scope="module")
def clients(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestClient]]:
    """The three real apps (lifespans run) over one artifacts folder whose CURRENT is GOOD."""
    store = Store(StoreSettings(tmp_path_factory.mktemp("feast"), f"confine_{uuid.uuid4().hex[:10]}", "sqlite"))
    store.apply()
    frames = make_source_frames()
    store.materialize_frames(frames.users, frames.meta, frames.content)
    apps = {
        "ranker": create_ranker(
            RankerSettings(artifacts_dir=artifacts, api_key=API_KEY, retriever_url="http://127.0.0.1:9"), store
        ),
        "retriever": create_retriever(
            RetrieverSettings(artifacts_dir=artifacts, api_key=API_KEY, retriever_refresh_s=0), store
        ),
        "embedder": create_embedder(
            EmbedderSettings(artifacts_dir=artifacts, api_key=API_KEY, retriever_url="", encoder="mfcc"), store=store
        ),
    }
    with ExitStack() as stack:
        yield {name: stack.enter_context(TestClient(app)) for name, app in apps.items()}


# --- the tamperings: each takes a fresh copy of GOOD (named `bad`) and the folder beside artifacts/ ---------


def outside_listed_path(bad: Path, outside: Path) -> None:
    (outside / "host.json").write_text("{}")
    doc = json.loads((bad / "manifest.json").read_text())
    listed = os.path.relpath(outside / "host.json", bad)  # ../../outside/host.json
    edit_manifest(bad, files={**doc["files"], listed: "0" * 64}, sizes={**doc["sizes"], listed: 2})


def outside_component_path(bad: Path, outside: Path) -> None:
    (outside / "pop.json").write_text(json.dumps({"track_ids": ["planted"]}))
    doc = json.loads((bad / "manifest.json").read_text())
    ranker = {**doc["components"]["ranker"], "popularity": os.path.relpath(outside / "pop.json", bad)}
    edit_manifest(bad, components={**doc["components"], "ranker": ranker})


def symlinked_file(bad: Path, outside: Path) -> None:
    (outside / "pop.json").write_bytes((bad / "popularity.json").read_bytes())  # same bytes: only the link is wrong
    (bad / "popularity.json").unlink()
    (bad / "popularity.json").symlink_to(outside / "pop.json")


def symlinked_manifest(bad: Path, outside: Path) -> None:
    (bad / "manifest.json").rename(outside / "manifest.json")
    (bad / "manifest.json").symlink_to(outside / "manifest.json")


def symlinked_folder(bad: Path, outside: Path) -> None:
    real = outside / bad.name
    bad.rename(real)
    bad.symlink_to(real, target_is_directory=True)


def unlisted_file(bad: Path, outside: Path) -> None:
    (bad / "retriever" / "extra.npy").write_bytes((bad / VECTORS).read_bytes())


def unlisted_onnx_external_data(bad: Path, outside: Path) -> None:
    """The ranker's weights moved to an external-data file the manifest does not list (the graph is relisted)."""
    model = onnx.load(bad / ONNX)
    onnx.save_model(model, bad / ONNX, save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    relist(bad, ONNX)


def onnx_external_data_outside(bad: Path, outside: Path) -> None:
    """The ranker's weights read from a file beside artifacts/, never checksummed (the graph is relisted)."""
    externalize_onnx_weights(bad / ONNX, os.path.relpath(outside / "weights.data", bad / "ranker"))
    relist(bad, ONNX)


def bundle_id_differs_from_folder(bad: Path, outside: Path) -> None:
    edit_manifest(bad, bundle_id=GOOD)


def unknown_manifest_field(bad: Path, outside: Path) -> None:
    edit_manifest(bad, serve_from="/etc")


def unknown_component(bad: Path, outside: Path) -> None:
    doc = json.loads((bad / "manifest.json").read_text())
    edit_manifest(bad, components={**doc["components"], "reranker": {"onnx": ONNX}})


def huge_file_of_the_wrong_size(bad: Path, outside: Path) -> None:
    with open(bad / VECTORS, "r+b") as fh:
        fh.truncate(8 << 30)  # sparse 8 GiB listed with the original size and checksum


def broken_onnx(bad: Path, outside: Path) -> None:
    (bad / ONNX).write_bytes(b"\x08\x07 not an onnx graph")
    relist(bad, ONNX)


def spec_not_json(bad: Path, outside: Path) -> None:
    (bad / "ranker" / "spec.json").write_text("{'fields': [")
    relist(bad, "ranker/spec.json")


def codebooks_manifest_disagrees(bad: Path, outside: Path) -> None:
    doc = json.loads((bad / "manifest.json").read_text())
    books = doc["components"]["codebooks"]
    books = {**books, "encoder": {**books["encoder"], "revision": "0"}}
    edit_manifest(bad, components={**doc["components"], "codebooks": books})


def retriever_vectors_hold_nan(bad: Path, outside: Path) -> None:
    vectors = np.load(bad / VECTORS)
    vectors[3, 1] = np.nan
    np.save(bad / VECTORS, vectors)
    relist(bad, VECTORS)


TAMPERINGS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "outside_listed_path": (outside_listed_path, "is not a plain path inside the bundle"),
    "outside_component_path": (outside_component_path, "is not a plain path inside the bundle"),
    "symlinked_file": (symlinked_file, "popularity.json is a symlink"),
    "symlinked_manifest": (symlinked_manifest, "manifest.json is missing or is not a plain file"),
    "symlinked_folder": (symlinked_folder, "is missing or is not a plain folder"),
    "unlisted_file": (unlisted_file, "retriever/extra.npy is in the folder but not in the manifest"),
    "unlisted_onnx_external_data": (unlisted_onnx_external_data, "model.onnx.data is in the folder but not in"),
    "onnx_external_data_outside": (onnx_external_data_outside, f"{ONNX} reads external data '../../../outside-"),
    "bundle_id_differs_from_folder": (bundle_id_differs_from_folder, f"the manifest names bundle '{GOOD}'"),
    "unknown_manifest_field": (unknown_manifest_field, "unknown manifest field(s) ['serve_from']"),
    "unknown_component": (unknown_component, "unknown component(s) ['reranker']"),
    "huge_file_of_the_wrong_size": (huge_file_of_the_wrong_size, f"{VECTORS} is missing or does not match"),
    "broken_onnx": (broken_onnx, f"{ONNX} is not a valid ONNX model"),
    "spec_not_json": (spec_not_json, "ranker/spec.json does not load as json"),
    "retriever_vectors_hold_nan": (retriever_vectors_hold_nan, f"{VECTORS} holds NaN or infinite values"),
    "codebooks_manifest_disagrees": (codebooks_manifest_disagrees, "components.codebooks.encoder disagrees"),
}


def refusal_text(response: object) -> str:
    """The refusal message, whichever error body a service answers with."""
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    return detail["message"] if isinstance(detail, dict) else str(detail)


def serving(client: TestClient) -> str | None:
    return client.get("/readyz").json().get("bundle_id")


def test_every_service_loads_the_good_bundle(clients: dict[str, TestClient]) -> None:
    for name, client in clients.items():
        assert client.get("/readyz").status_code == 200, name
        assert serving(client) == GOOD, name


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_a_tampered_bundle_is_refused_by_every_service_and_the_old_one_keeps_serving(
    case: str, artifacts: Path, clients: dict[str, TestClient]
) -> None:
    tamper, expected = TAMPERINGS[case]
    bad_id = f"bad-{case.replace('_', '-')}"
    outside = artifacts.parent / f"outside-{bad_id}"
    outside.mkdir()
    tamper(clone_bundle(artifacts / GOOD, artifacts, bad_id), outside)
    for name, client in clients.items():
        refused = client.post("/admin/reload", json={"bundle_id": bad_id}, headers=AUTH)
        assert refused.status_code in (409, 422), (name, refused.text)  # each service's refusal status
        assert expected in refusal_text(refused), (name, refusal_text(refused))
        assert str(artifacts.parent) not in refused.text, name  # no host path in the answer
        assert serving(client) == GOOD and client.get("/readyz").status_code == 200, name
    candidates = clients["retriever"].get("/candidates", params={"user_id": "u0001", "k": 5})
    assert candidates.status_code == 200 and candidates.json()["bundle_id"] == GOOD


def test_a_symlinked_current_is_refused_by_every_service(artifacts: Path, clients: dict[str, TestClient]) -> None:
    pointer = artifacts / "CURRENT"
    real = artifacts.parent / "CURRENT.real"
    real.write_text(f"{GOOD}\n")
    pointer.rename(artifacts.parent / "CURRENT.saved")
    pointer.symlink_to(real)
    try:
        for name, client in clients.items():
            refused = client.post("/admin/reload", headers=AUTH)  # no body: reload what CURRENT names
            assert refused.status_code in (409, 422), (name, refused.text)
            assert "CURRENT is missing or not a plain file" in refusal_text(refused), name
            assert serving(client) == GOOD, name
    finally:
        pointer.unlink()
        (artifacts.parent / "CURRENT.saved").rename(pointer)
    for name, client in clients.items():
        assert client.post("/admin/reload", headers=AUTH).status_code == 200, name  # the plain CURRENT loads
