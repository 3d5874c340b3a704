"""ONNX Runtime provider selection (ENCORE_ONNX_DEVICE): the rule, and real sessions on this CPU machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from pydantic import ValidationError

from encore import onnx_scorer
from encore.onnx_scorer import CPU, CUDA, OnnxDeviceError, onnx_session, providers_for, use_device
from encore.settings import ServiceSettings

TENSORRT = "TensorrtExecutionProvider"


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("cpu", [CPU], [CPU]),
        ("cpu", [CUDA, CPU], [CPU]),
        ("auto", [CPU], [CPU]),
        ("auto", [TENSORRT, CUDA, CPU], [CUDA, CPU]),
        ("cuda", [TENSORRT, CUDA, CPU], [CUDA, CPU]),
    ],
)
def test_providers_for(device: str, available: list[str], expected: list[str]) -> None:
    assert providers_for(device, available) == expected


def test_cuda_without_a_cuda_build_is_refused_and_unknown_devices_too() -> None:
    with pytest.raises(OnnxDeviceError, match="ONNXRUNTIME=gpu"):
        providers_for("cuda", [CPU])
    with pytest.raises(OnnxDeviceError, match="expected one of"):
        providers_for("gpu", [CUDA, CPU])
    with pytest.raises(OnnxDeviceError):
        use_device("tpu")
    with pytest.raises(ValidationError):
        ServiceSettings(onnx_device="gpu")
    assert ServiceSettings().onnx_device == "auto"


def _model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_sessions_on_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto and cpu run (on the CPU here); cuda runs only where this onnxruntime build can load CUDA."""
    model = _model(tmp_path / "relu.onnx")
    monkeypatch.setattr(onnx_scorer, "_device", "auto")
    session = onnx_session(model)
    assert session.run(None, {"x": np.array([-1.0, 0.0, 2.0], np.float32)})[0].tolist() == [0.0, 0.0, 2.0]
    expected = [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]
    assert session.get_providers()[0] in expected and CPU in session.get_providers()
    use_device("cpu")
    assert onnx_session(model).get_providers() == [CPU]
    if CUDA not in ort.get_available_providers():  # the CPU build: a cuda setting refuses to start
        with pytest.raises(OnnxDeviceError):
            onnx_session(model, device="cuda")
