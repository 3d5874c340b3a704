"""The ranker's part of an artifact bundle: CTR model (ONNX), feature spec and popularity fallback.

Bundle contract (paths relative to the bundle folder):
- `ranker/model.onnx`: an exported CTR model (training.export), inputs named by `spec.input_names()`,
  output `score` (probabilities).
- `ranker/spec.json`: the FeatureSpec the model was trained with; `manifest["feature_spec_hash"]` = its hash.
- `popularity.json`: {"track_ids": [...]} in descending popularity (training window), the fallback
  candidates when the retriever is down.
- `manifest["components"]["ranker"]` = {"model": "DCNv2", "onnx": "ranker/model.onnx",
  "spec": "ranker/spec.json", "popularity": "popularity.json", "metrics": {...}}; "popularity" may be
  left out (then `popularity.json` is used).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from encore.artifacts import Bundle, BundleError, BundleHolder, current_bundle_path
from encore.onnx_scorer import OnnxScorer
from encore.schema import FeatureSpec
from services.ranker.features import CandidateFeatures, build_frame, check_spec

DEFAULT_POPULARITY = "popularity.json"

log = logging.getLogger("encore.ranker")


@dataclass(frozen=True)
class RankerModel:
    """Everything one bundle gives the ranker; replaced as a whole on reload."""

    bundle_id: str
    model_name: str
    spec: FeatureSpec
    scorer: OnnxScorer
    popularity: list[str]

    @property
    def providers(self) -> list[str]:
        return self.scorer.providers


def load_ranker_model(bundle: Bundle, onnx_threads: int = 1) -> RankerModel:
    """Build the ranker state from a verified bundle; any inconsistency raises BundleError."""
    component = bundle.components.get("ranker")
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
    check_spec(spec)

    scorer = OnnxScorer(bundle.file(component["onnx"]), threads=onnx_threads)
    if sorted(scorer.input_names) != sorted(spec.input_names()):
        raise BundleError(
            f"bundle {bundle.id}: the ONNX graph takes {scorer.input_names}, the spec packs {spec.input_names()}"
        )

    popularity_doc = json.loads(bundle.file(component.get("popularity", DEFAULT_POPULARITY)).read_text())
    track_ids = popularity_doc.get("track_ids") if isinstance(popularity_doc, dict) else None
    if not isinstance(track_ids, list) or not track_ids or not all(isinstance(t, str) for t in track_ids):
        raise BundleError(f"bundle {bundle.id}: popularity file needs a non-empty 'track_ids' list of strings")

    model = RankerModel(bundle.id, str(component["model"]), spec, scorer, list(dict.fromkeys(track_ids)))
    _smoke_test(model)
    return model


def _smoke_test(model: RankerModel) -> None:
    """Encode and score two all-unknown rows through the serving path, so a broken graph is refused now."""
    items = CandidateFeatures.unknown(["?", "?"])
    scores = model.scorer.score(model.spec.encode_packed(build_frame(model.spec, "?", None, items)))
    if scores.shape != (2,) or not np.isfinite(scores).all():
        raise BundleError(f"bundle {model.bundle_id}: the model gave {scores!r} for two unknown rows")


def resolve_bundle_path(artifacts_dir: Path, bundle_id: str | None) -> Path:
    """`artifacts_dir/<bundle_id>`, or the bundle `artifacts_dir/CURRENT` names when no id is given."""
    return current_bundle_path(artifacts_dir) if bundle_id is None else Path(artifacts_dir) / bundle_id


def reload_bundle(holder: BundleHolder[RankerModel], path: Path) -> tuple[str, str | None]:
    """Load, verify and swap in the bundle at `path`; returns (new id, previous id).

    A refused bundle raises BundleError (the caller logs it); the holder keeps serving the old one.
    """
    previous = holder.bundle.id if holder.bundle else None
    bundle = holder.reload(path)
    log.info("bundle %s loaded (model %s), replacing %s", bundle.id, holder.state.model_name, previous)
    return bundle.id, previous
