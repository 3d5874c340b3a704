"""The ranker's part of an artifact bundle: one writer (training, benchmarks, tests) and one reader (the ranker).

Files (relative to the bundle folder):
- `ranker/model.onnx`: an exported CTR model (training.export), inputs named by `spec.input_names()`,
  output `score` (probabilities);
- `ranker/spec.json`: the FeatureSpec the model was trained with; `manifest["feature_spec_hash"]` = its hash;
- `popularity.json`: {"track_ids": [...]} in descending popularity (training window), the ranker's fallback
  candidates when the retriever is down;
- `ranker/cold_calibration.json` (optional): encore.cold_calibration, which puts the scores of tracks the
  model never trained on onto the warm scale.
- `ranker/model.int8.onnx` (optional): the same graph with ONNX Runtime's dynamic int8 quantization, written only
  when its AUC on held-out rows the trainer gives (`EvalRows`) is within INT8_MAX_AUC_DROP of the fp32 graph's;
  the ranker serves it with ENCORE_RANKER_PRECISION=int8 (docs/performance.md).
`manifest["components"]["ranker"]` = {"model", "hparams" (optional), "onnx", "onnx_int8" (optional), "int8" (the
check: rows, AUCs, max abs score difference, or why no int8 graph was written), "spec", "popularity",
"cold_calibration" (optional), "metrics"}; a bundle may leave "popularity" out (then `popularity.json`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from encore.artifacts import Bundle, BundleBuilder, BundleError
from encore.cold_calibration import ColdCalibration
from encore.io import write_json_atomic
from encore.schema import FeatureSpec

log = logging.getLogger("encore.artifacts")

INT8_MAX_AUC_DROP = 0.001  # the int8 graph is left out when its AUC is lower than the fp32 graph's by more


@dataclass(frozen=True)
class EvalRows:
    """Held-out rows the trainer already has (e.g. the test split of the bundle's metrics): packed model inputs
    (`spec.encode_packed`) and their 0/1 labels. The int8 graph is checked on them against the fp32 one."""

    name: str
    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray


@dataclass(frozen=True)
class RankerComponent:
    NAME: ClassVar[str] = "ranker"
    ONNX: ClassVar[str] = "ranker/model.onnx"
    SPEC: ClassVar[str] = "ranker/spec.json"
    POPULARITY: ClassVar[str] = "popularity.json"
    COLD_CALIBRATION: ClassVar[str] = "ranker/cold_calibration.json"
    ONNX_INT8: ClassVar[str] = "ranker/model.int8.onnx"

    model: str  # the CTR model's registry name, e.g. "DCNv2"
    spec: FeatureSpec
    popularity: list[str]  # track ids, most popular first
    cold_calibration: ColdCalibration | None = None
    hparams: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    onnx_path: Path | None = None  # where the graph lies (set by `read`)
    int8_path: Path | None = None  # where the int8 graph lies, None: the bundle has none (set by `read`)
    int8: dict[str, Any] = field(default_factory=dict)  # the int8 check as recorded (set by `read`)

    def write(
        self, builder: BundleBuilder, export_onnx: Callable[[Path], object], eval_rows: EvalRows | None = None
    ) -> dict[str, Any]:
        """Write the files into the bundle being built, with `export_onnx(path)` writing the graph, and its int8
        version when it scores `eval_rows` as well (`write_int8`); record the component and the spec hash in its
        manifest. Returns the component's manifest entry."""
        root = builder.path
        (root / self.ONNX).parent.mkdir(parents=True, exist_ok=True)
        self.spec.save(root / self.SPEC)
        export_onnx(root / self.ONNX)
        int8 = write_int8(root / self.ONNX, root / self.ONNX_INT8, eval_rows)
        write_json_atomic(root / self.POPULARITY, {"track_ids": list(self.popularity)})
        entry: dict[str, Any] = {"model": self.model}
        if self.hparams is not None:
            entry["hparams"] = self.hparams
        entry["onnx"] = self.ONNX
        if int8["written"]:
            entry["onnx_int8"] = self.ONNX_INT8
        entry |= {"int8": int8, "spec": self.SPEC, "popularity": self.POPULARITY}
        if self.cold_calibration is not None:
            self.cold_calibration.write(root / self.COLD_CALIBRATION)
            entry["cold_calibration"] = self.COLD_CALIBRATION
        entry["metrics"] = self.metrics
        builder.manifest.setdefault("components", {})[self.NAME] = entry
        builder.manifest["feature_spec_hash"] = self.spec.hash
        return entry

    @classmethod
    def read(cls, bundle: Bundle) -> RankerComponent:
        """The component of a verified bundle; any inconsistency raises BundleError."""
        component = bundle.components.get(cls.NAME)
        if not isinstance(component, dict):
            raise BundleError(f"bundle {bundle.id} has no components.ranker entry")
        for key in ("model", "onnx", "spec"):
            if not component.get(key):
                raise BundleError(f"bundle {bundle.id}: components.ranker.{key} is missing")
        spec = FeatureSpec.load(bundle.file(component["spec"]))
        if bundle.manifest.get("feature_spec_hash") != spec.hash:
            raise BundleError(
                f"bundle {bundle.id}: {component['spec']} hashes to {spec.hash}, "
                f"manifest says feature_spec_hash={bundle.manifest.get('feature_spec_hash')}"
            )
        doc = json.loads(bundle.file(component.get("popularity", cls.POPULARITY)).read_text())
        track_ids = doc.get("track_ids") if isinstance(doc, dict) else None
        if not isinstance(track_ids, list) or not track_ids or not all(isinstance(t, str) for t in track_ids):
            raise BundleError(f"bundle {bundle.id}: popularity file needs a non-empty 'track_ids' list of strings")
        calibration = None
        if component.get("cold_calibration"):
            try:
                calibration = ColdCalibration.read(bundle.file(component["cold_calibration"]))
            except (ValueError, TypeError) as exc:
                raise BundleError(f"bundle {bundle.id}: {component['cold_calibration']}: {exc}") from exc
        return cls(
            model=str(component["model"]),
            spec=spec,
            popularity=list(dict.fromkeys(track_ids)),
            cold_calibration=calibration,
            hparams=component.get("hparams"),
            metrics=component.get("metrics") or {},
            onnx_path=bundle.file(component["onnx"]),
            int8_path=bundle.file(component["onnx_int8"]) if component.get("onnx_int8") else None,
            int8=component.get("int8") or {},
        )


def write_int8(fp32: Path, out: Path, rows: EvalRows | None) -> dict[str, Any]:
    """Quantize the graph at `fp32` (ONNX Runtime dynamic quantization, int8 weights; `_int8_graph`) and write it
    to `out` when its AUC on `rows` is within INT8_MAX_AUC_DROP of the fp32 graph's. Returns the check for the
    manifest: {"written", "eval", "rows", "auc_fp32", "auc_int8", "auc_drop", "max_abs_diff", "fp32_layers"}, or
    "written": false and "reason" when there was nothing to check on, quantization failed, or the AUC dropped too
    far."""
    if rows is None or len(rows.labels) == 0:
        return {"written": False, "reason": "no evaluation rows were given at bundle time"}
    labels = np.asarray(rows.labels).reshape(-1)
    if len(np.unique(labels)) < 2:
        return {"written": False, "reason": f"the {rows.name} rows hold one label only: no AUC to compare"}
    with tempfile.TemporaryDirectory(prefix="encore-int8-") as folder:
        try:
            candidate, check = _int8_graph(fp32, Path(folder), rows.inputs, labels)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the int8 graph out, with the reason
            log.warning("int8 quantization of %s failed: %s", fp32.name, exc)
            return {"written": False, "reason": f"quantization failed: {type(exc).__name__}: {exc}"[:500]}
        check |= {"eval": rows.name, "rows": int(len(labels))}
        if check["auc_drop"] > INT8_MAX_AUC_DROP:
            reason = f"AUC on the {rows.name} rows drops by {check['auc_drop']:.5f} > {INT8_MAX_AUC_DROP}"
            log.warning("int8 graph left out: %s", reason)
            return {"written": False, "reason": reason, **check}
        shutil.copyfile(candidate, out)
    return {"written": True, **check}


def _int8_graph(
    fp32: Path, folder: Path, inputs: Mapping[str, np.ndarray], labels: np.ndarray
) -> tuple[Path, dict[str, Any]]:
    """Every layer (Gemm, MatMul) in int8; when that drops the AUC too far, the layers that cost the most AUC on
    their own are kept in fp32, worst first, until it does not or half the layers are fp32 (a trained DCNv2's
    final logit layer, say, whose input mixes the cross and deep outputs' scales). Returns the last graph tried
    and its comparison with fp32, with the layers kept in fp32."""
    scores_fp32 = _scores(fp32, inputs)

    def attempt(keep: list[str]) -> tuple[Path, dict[str, Any]]:
        path = _quantize(fp32, folder / "model.int8.onnx", keep)
        return path, _compare(labels, scores_fp32, _scores(path, inputs)) | {"fp32_layers": keep}

    path, check = attempt([])
    if check["auc_drop"] <= INT8_MAX_AUC_DROP:
        return path, check
    layers = _layers(fp32)
    alone = {layer: attempt([other for other in layers if other != layer])[1]["auc_drop"] for layer in layers}
    keep: list[str] = []
    for layer in sorted(layers, key=alone.__getitem__, reverse=True)[: len(layers) // 2]:
        keep.append(layer)
        path, check = attempt(keep)
        if check["auc_drop"] <= INT8_MAX_AUC_DROP:
            break
    return path, check


def _quantize(fp32: Path, out: Path, keep_fp32: list[str]) -> Path:
    from encore.onnx_scorer import quantize_int8

    # The quantizer turns a Gemm into "<name>_MatMul" + Add before quantizing it: both names keep a layer fp32.
    exclude = [*keep_fp32, *(f"{name}_MatMul" for name in keep_fp32)]
    return quantize_int8(fp32, out, nodes_to_exclude=exclude)


def _layers(fp32: Path) -> list[str]:
    """The graph's Gemm and MatMul nodes, the ones dynamic quantization makes int8."""
    import onnx

    return [node.name for node in onnx.load(str(fp32)).graph.node if node.op_type in ("Gemm", "MatMul")]


def _scores(path: Path, inputs: Mapping[str, np.ndarray], batch: int = 8192) -> np.ndarray:
    """The graph's scores of every row, on the CPU, in batches."""
    from encore.onnx_scorer import onnx_session

    session = onnx_session(path, threads=None, device="cpu")
    names = [i.name for i in session.get_inputs()]
    n = len(next(iter(inputs.values())))
    parts = [
        session.run(["score"], {name: np.ascontiguousarray(inputs[name][start : start + batch]) for name in names})[0]
        for start in range(0, n, batch)
    ]
    return np.concatenate(parts).reshape(-1).astype(np.float64)


def _compare(labels: np.ndarray, fp32: np.ndarray, int8: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    auc_fp32, auc_int8 = float(roc_auc_score(labels, fp32)), float(roc_auc_score(labels, int8))
    return {
        "auc_fp32": round(auc_fp32, 6),
        "auc_int8": round(auc_int8, 6),
        "auc_drop": round(auc_fp32 - auc_int8, 6),
        "max_abs_diff": round(float(np.abs(fp32 - int8).max()), 6),
    }
