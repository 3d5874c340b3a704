"""The ranker's int8 graph: written at bundle time only with its accuracy checked against fp32, served with
ENCORE_RANKER_PRECISION=int8, and fp32 when a bundle has none (real bundle, ONNX Runtime, store and HTTP app)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encore import ranker_bundle
from encore.artifacts import load_bundle, set_current
from encore.onnx_scorer import OnnxScorer
from encore.ranker_bundle import INT8_MAX_AUC_DROP, EvalRows, RankerComponent, write_int8
from encore.store import Store
from services.ranker.main import create_app
from tests.services.ranker.conftest import FakeRetriever, TrainedBundle, candidate_rows, copy_bundle
from tests.services.ranker.test_api import settings_for

CANDIDATES = [f"t{i}" for i in range(0, 60, 2)]


def _scores(client: TestClient, user_id: str) -> tuple[list[str], np.ndarray]:
    response = client.get("/recommend", params={"user_id": user_id, "k": 10})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    return [item["track_id"] for item in items], np.array([item["score"] for item in items])


def _offline(bundle: TrainedBundle, graph: Path, user_id: str, track_ids: list[str]) -> dict[str, float]:
    scores = OnnxScorer(graph).score(bundle.spec.encode_packed(bundle.frame_for(user_id, track_ids)))
    return dict(zip(track_ids, scores.tolist(), strict=True))


def _train_rows(bundle: TrainedBundle) -> EvalRows:
    frame = bundle.train_frame
    return EvalRows("train", bundle.spec.encode_packed(frame), bundle.spec.labels(frame))


def test_the_bundle_carries_an_int8_graph_checked_against_fp32(trained_bundle: TrainedBundle) -> None:
    bundle = load_bundle(trained_bundle.artifacts_dir / trained_bundle.bundle_id)  # both graphs pass the checks
    entry = bundle.components["ranker"]
    assert entry["onnx_int8"] == RankerComponent.ONNX_INT8 and bundle.file(entry["onnx_int8"]).is_file()
    check = entry["int8"]
    assert check["written"] is True and check["eval"] == "valid" and check["rows"] > 0
    assert check["auc_fp32"] - check["auc_int8"] == pytest.approx(check["auc_drop"], abs=2e-6)
    assert check["auc_drop"] <= INT8_MAX_AUC_DROP and 0 < check["max_abs_diff"] < 0.05
    assert RankerComponent.read(bundle).int8_path == bundle.file(RankerComponent.ONNX_INT8)


def test_no_int8_graph_without_rows_a_quantizable_graph_or_the_accuracy(
    trained_bundle: TrainedBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "model.int8.onnx"
    assert write_int8(trained_bundle.onnx_path, out, None) == {
        "written": False,
        "reason": "no evaluation rows were given at bundle time",
    }
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not an onnx graph")
    failed = write_int8(garbage, out, _train_rows(trained_bundle))
    assert failed["written"] is False and failed["reason"].startswith("quantization failed")
    monkeypatch.setattr(ranker_bundle, "INT8_MAX_AUC_DROP", -1.0)  # any AUC change is too much
    root_filters = list(logging.root.filters)
    with caplog.at_level(logging.WARNING):
        refused = write_int8(trained_bundle.onnx_path, out, _train_rows(trained_bundle))
    # onnxruntime's advice to pre-process, once per attempt, is dropped, and only while quantizing
    assert "pre-processing before quantization" not in caplog.text and logging.root.filters == root_filters
    assert refused["written"] is False and refused["reason"].startswith("AUC on the train rows drops by")
    assert refused["rows"] == len(trained_bundle.train_frame) and "auc_int8" in refused
    assert len(refused["fp32_layers"]) == len(ranker_bundle._layers(trained_bundle.onnx_path)) // 2  # tried those
    assert not out.exists()


def test_an_int8_ranker_serves_from_the_int8_graph(
    trained_bundle: TrainedBundle, store: Store, retriever: FakeRetriever
) -> None:
    retriever.candidates = candidate_rows(CANDIDATES)
    settings = settings_for(trained_bundle.artifacts_dir, retriever.url, ranker_precision="int8")
    with TestClient(create_app(settings, store)) as client:
        assert client.get("/readyz").json()["ranker_precision"] == "int8"
        ids, scores = _scores(client, "u3")
    int8_graph = trained_bundle.artifacts_dir / trained_bundle.bundle_id / RankerComponent.ONNX_INT8
    served_by_int8 = _offline(trained_bundle, int8_graph, "u3", CANDIDATES)
    fp32 = _offline(trained_bundle, trained_bundle.onnx_path, "u3", CANDIDATES)
    np.testing.assert_allclose(scores, [served_by_int8[t] for t in ids], rtol=1e-6)
    np.testing.assert_allclose(scores, [fp32[t] for t in ids], atol=0.02)


def test_a_bundle_without_an_int8_graph_serves_fp32(
    trained_bundle: TrainedBundle,
    store: Store,
    retriever: FakeRetriever,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path / "artifacts"
    path = copy_bundle(trained_bundle.artifacts_dir / trained_bundle.bundle_id, root, "no-int8", without_int8=True)
    assert "onnx_int8" not in json.loads((path / "manifest.json").read_text())["components"]["ranker"]
    set_current(root, "no-int8")
    retriever.candidates = candidate_rows(CANDIDATES)
    with caplog.at_level(logging.WARNING, "encore.ranker"):
        with TestClient(create_app(settings_for(root, retriever.url, ranker_precision="int8"), store)) as client:
            assert client.get("/readyz").json()["ranker_precision"] == "fp32"
            ids, scores = _scores(client, "u3")
    assert "ENCORE_RANKER_PRECISION=int8, but bundle no-int8 has no int8 graph" in caplog.text
    fp32 = _offline(trained_bundle, trained_bundle.onnx_path, "u3", CANDIDATES)
    np.testing.assert_allclose(scores, [fp32[t] for t in ids], rtol=1e-6)
