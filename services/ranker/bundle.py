"""The ranker's part of an artifact bundle: CTR model (ONNX), feature spec and popularity fallback.

Bundle contract (paths relative to the bundle folder):
- `ranker/model.onnx`: an exported CTR model (training.export), inputs named by `spec.input_names()`,
  output `score` (probabilities).
- `ranker/spec.json`: the FeatureSpec the model was trained with; `manifest["feature_spec_hash"]` = its hash.
- `popularity.json`: {"track_ids": [...]} in descending popularity (training window), the fallback
  candidates when the retriever is down.
- `ranker/cold_calibration.json` (optional): encore.cold_calibration, which puts the scores of tracks the
  model never trained on onto the warm scale.
- `manifest["components"]["ranker"]` = {"model": "DCNv2", "onnx": "ranker/model.onnx",
  "spec": "ranker/spec.json", "popularity": "popularity.json", "cold_calibration": "ranker/cold_calibration.json",
  "metrics": {...}}; "popularity" may be left out (then `popularity.json` is used), "cold_calibration" too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from encore import feature_names as fn
from encore.artifacts import Bundle, BundleError, BundleHolder, current_bundle_path
from encore.cold_calibration import ColdCalibration
from encore.onnx_scorer import OnnxScorer
from encore.schema import FeatureSpec
from services.ranker.cold import ColdScores
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
    cold_scores: ColdScores | None = None  # cold tracks' scores onto the warm scale; None: raw scores

    def score(self, packed: dict[str, np.ndarray]) -> np.ndarray:
        """Click probabilities of packed rows, cold tracks' put on the warm scale (services/ranker/cold.py)."""
        scores = self.scorer.score(packed)
        if self.cold_scores is None:
            return scores
        return self.cold_scores(packed, scores, self.scorer.score)

    @property
    def providers(self) -> list[str]:
        return self.scorer.providers


def load_ranker_model(bundle: Bundle, onnx_threads: int = 1, cold_panel_weight: float | None = None) -> RankerModel:
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

    cold_scores = None
    if component.get("cold_calibration"):
        try:
            calibration = ColdCalibration.read(bundle.file(component["cold_calibration"]))
        except (ValueError, TypeError) as exc:
            raise BundleError(f"bundle {bundle.id}: {component['cold_calibration']}: {exc}") from exc
        if cold_panel_weight is not None:
            calibration = replace(calibration, panel_weight=cold_panel_weight)
        cold_scores = ColdScores(spec, calibration, _panel_inputs(spec, calibration.reference_users))
    popular = list(dict.fromkeys(track_ids))
    model = RankerModel(bundle.id, str(component["model"]), spec, scorer, popular, cold_scores)
    _smoke_test(model)
    return model


def _panel_inputs(spec: FeatureSpec, users: list[dict]) -> dict[str, np.ndarray]:
    """Packed inputs of the reference panel, one row each (their item inputs are never used)."""
    rows = []
    for user in users:
        profile = {name: value for name, value in user.items() if name != fn.USER_ID}
        frame = build_frame(spec, str(user[fn.USER_ID]), profile, CandidateFeatures.unknown(["?"]))
        rows.append(spec.encode_packed(frame))
    return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}


def _smoke_test(model: RankerModel) -> None:
    """Encode and score two all-unknown rows through the serving path, so a broken graph is refused now."""
    items = CandidateFeatures.unknown(["?", "?"])
    scores = model.score(model.spec.encode_packed(build_frame(model.spec, "?", None, items)))
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
