"""The ranker's part of an artifact bundle: one writer (training, benchmarks, tests) and one reader (the ranker).

Files (relative to the bundle folder):
- `ranker/model.onnx`: an exported CTR model (training.export), inputs named by `spec.input_names()`,
  output `score` (probabilities);
- `ranker/spec.json`: the FeatureSpec the model was trained with; `manifest["feature_spec_hash"]` = its hash;
- `popularity.json`: {"track_ids": [...]} in descending popularity (training window), the ranker's fallback
  candidates when the retriever is down;
- `ranker/cold_calibration.json` (optional): encore.cold_calibration, which puts the scores of tracks the
  model never trained on onto the warm scale.
`manifest["components"]["ranker"]` = {"model", "hparams" (optional), "onnx", "spec", "popularity",
"cold_calibration" (optional), "metrics"}; a bundle may leave "popularity" out (then `popularity.json`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from encore.artifacts import Bundle, BundleBuilder, BundleError
from encore.cold_calibration import ColdCalibration
from encore.io import write_json_atomic
from encore.schema import FeatureSpec


@dataclass(frozen=True)
class RankerComponent:
    NAME: ClassVar[str] = "ranker"
    ONNX: ClassVar[str] = "ranker/model.onnx"
    SPEC: ClassVar[str] = "ranker/spec.json"
    POPULARITY: ClassVar[str] = "popularity.json"
    COLD_CALIBRATION: ClassVar[str] = "ranker/cold_calibration.json"

    model: str  # the CTR model's registry name, e.g. "DCNv2"
    spec: FeatureSpec
    popularity: list[str]  # track ids, most popular first
    cold_calibration: ColdCalibration | None = None
    hparams: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    onnx_path: Path | None = None  # where the graph lies (set by `read`)

    def write(self, builder: BundleBuilder, export_onnx: Callable[[Path], object]) -> dict[str, Any]:
        """Write the files into the bundle being built, with `export_onnx(path)` writing the graph; record the
        component and the spec hash in its manifest. Returns the component's manifest entry."""
        root = builder.path
        (root / self.ONNX).parent.mkdir(parents=True, exist_ok=True)
        self.spec.save(root / self.SPEC)
        export_onnx(root / self.ONNX)
        write_json_atomic(root / self.POPULARITY, {"track_ids": list(self.popularity)})
        entry: dict[str, Any] = {"model": self.model}
        if self.hparams is not None:
            entry["hparams"] = self.hparams
        entry |= {"onnx": self.ONNX, "spec": self.SPEC, "popularity": self.POPULARITY}
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
        )
