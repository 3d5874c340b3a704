"""ONNX Runtime sessions for every model Encore serves (ranker scorer, audio encoders, bundle checks).

Providers are chosen in one place, `providers_for`, from one setting, ENCORE_ONNX_DEVICE (encore.settings
ServiceSettings.onnx_device; services call `use_device` at start-up): `auto` takes CUDA when this onnxruntime
build offers it, else the CPU; `cuda` insists on CUDA (a session that could not load it is refused); `cpu`
never tries CUDA. CUDA comes with the onnxruntime-gpu build (`make install ONNXRUNTIME=gpu`); with the CPU
build, or a GPU build on a machine whose CUDA libraries do not load, `auto` ends up on the CPU. /readyz
reports session.get_providers(), what a session really runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from encore.errors import EncoreError

if TYPE_CHECKING:  # onnxruntime is imported by the first session, not by `use_device` (the retriever has none)
    import onnxruntime as ort

log = logging.getLogger(__name__)

Device = Literal["auto", "cuda", "cpu"]
DEVICES: tuple[str, ...] = ("auto", "cuda", "cpu")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
_device: Device = "auto"


class OnnxDeviceError(EncoreError):
    """The ONNX device setting asks for a provider this machine or onnxruntime build cannot give."""


def use_device(device: str) -> None:
    """Set the device every later session of this process uses (a service calls it once at start-up)."""
    global _device
    if device not in DEVICES:
        raise OnnxDeviceError(f"ENCORE_ONNX_DEVICE={device!r}: expected one of {DEVICES}")
    _device = device  # type: ignore[assignment]


def providers_for(device: str, available: Sequence[str]) -> list[str]:
    """The providers to ask a session for, given the setting and onnxruntime's available providers."""
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise OnnxDeviceError(
                f"ENCORE_ONNX_DEVICE=cuda, but this onnxruntime offers {list(available)}: "
                "install the GPU build (make install ONNXRUNTIME=gpu) or set it to auto or cpu"
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise OnnxDeviceError(f"ENCORE_ONNX_DEVICE={device!r}: expected one of {DEVICES}")


def onnx_session(path: str | Path, threads: int | None = 1, device: str | None = None) -> ort.InferenceSession:
    """An InferenceSession on the configured device; `threads` intra-op threads (None: ONNX Runtime's default)."""
    import onnxruntime as ort

    device = device or _device
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=providers_for(device, ort.get_available_providers()))
    if device == "cuda" and CUDA not in session.get_providers():  # the GPU build falls back when CUDA won't load
        raise OnnxDeviceError(f"ENCORE_ONNX_DEVICE=cuda, but {Path(path).name} runs on {session.get_providers()}")
    return session


def encoder_providers(encoder: object) -> list[str]:
    """The providers an audio encoder's ONNX sessions run on (MusiCNN's nets, a pretrained tower); [] for none."""
    parts = [*getattr(encoder, "nets", {}).values(), getattr(encoder, "tower", None)]
    found: list[str] = []
    for part in parts:
        session = getattr(part, "session", None)
        for provider in session.get_providers() if session is not None else []:
            if provider not in found:
                found.append(provider)
    return found


class _DropPreProcessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing before quantization")


def quantize_int8(src: Path, dst: Path, **options: object) -> Path:
    """onnxruntime's dynamic int8 quantization (int8 weights, activations quantized per call) of `src` into `dst`.

    The quantizer advises pre-processing (shape inference and graph optimization) on the root logger at every call,
    once per layer tried by the ranker's bundle check; we quantize the exported graph as it is, so the layer names
    the check keeps in fp32 are the export's own, and the advice is dropped rather than repeated."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    advice = _DropPreProcessAdvice()
    logging.root.addFilter(advice)
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, **options)
    finally:
        logging.root.removeFilter(advice)
    return dst


class OnnxScorer:
    """One InferenceSession; `score(packed) -> (N,) float32` probabilities."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.session = onnx_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def score(self, packed: Mapping[str, np.ndarray]) -> np.ndarray:
        feeds = {name: packed[name] for name in self.input_names}
        return self.session.run(["score"], feeds)[0]
