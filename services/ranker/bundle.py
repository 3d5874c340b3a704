"""The ranker's state from a bundle: its ranker component (encore/ranker_bundle.py) opened for serving.

The files and the manifest entry are RankerComponent's; here the graph is opened in ONNX Runtime, checked
against the spec, the cold calibration wired in, and two all-unknown rows scored before the bundle is taken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from encore import feature_names as fn
from encore.artifacts import Bundle, BundleError, BundleHolder, current_bundle_path
from encore.audio.content import ContentComponent, foreign_rows
from encore.onnx_scorer import OnnxScorer
from encore.ranker_bundle import RankerComponent
from encore.ranker_frame import TrackFeatures, build_frame, check_fields
from encore.schema import FeatureSpec
from services.ranker.cold import ColdScores

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
    content_version: str | None = None  # the codebooks its tokens were trained with (None: a bundle without any)
    precision: str = "fp32"  # the graph `scorer` runs: fp32, or int8 (ENCORE_RANKER_PRECISION)

    def score(self, packed: dict[str, np.ndarray]) -> np.ndarray:
        """Click probabilities of packed rows, cold tracks' put on the warm scale (services/ranker/cold.py)."""
        scores = self.scorer.score(packed)
        if self.cold_scores is None:
            return scores
        return self.cold_scores(packed, scores, self.scorer.score)

    def own_content(self, items: TrackFeatures) -> TrackFeatures:
        """`items` with every content row of other codebooks than the model's marked missing (served without audio
        features, as a track without content; encore/audio/content.py): tokens of one codebook version are never
        read by a model trained on another's, say while a refit's re-tokenized rows are written (docs/events.md).
        The same object when every row is the model's (the usual case; pre-encoded inputs stay usable)."""
        valid = items.valid[fn.TRACK_CONTENT]
        if self.content_version is None or "encoder_revision" not in items.columns or not valid.any():
            return items
        foreign = valid & foreign_rows(items.columns["encoder_revision"], self.content_version)
        if not foreign.any():
            return items
        log.warning("%d of %d candidates hold content of other codebooks than %s: scored without it",
                    int(foreign.sum()), len(items), self.content_version)  # fmt: skip
        return replace(items, valid={**items.valid, fn.TRACK_CONTENT: valid & ~foreign}, rows=None, table=None)

    @property
    def providers(self) -> list[str]:
        return self.scorer.providers


def load_ranker_model(
    bundle: Bundle, onnx_threads: int = 1, cold_panel_weight: float | None = None, precision: str = "fp32"
) -> RankerModel:
    """Build the ranker state from a verified bundle; any inconsistency raises BundleError. `precision` "int8"
    serves the bundle's int8 graph when it has one (else fp32, with a warning); everything that scores (requests,
    the cold calibration's panel, the smoke test) goes through that one session."""
    component = RankerComponent.read(bundle)
    spec = component.spec
    check_fields(spec.fields)
    path, precision = _graph(bundle, component, precision)
    scorer = OnnxScorer(path, threads=onnx_threads)
    if sorted(scorer.input_names) != sorted(spec.input_names()):
        raise BundleError(
            f"bundle {bundle.id}: the ONNX graph takes {scorer.input_names}, the spec packs {spec.input_names()}"
        )
    calibration = component.cold_calibration
    cold_scores = None
    if calibration is not None:
        if cold_panel_weight is not None:
            calibration = replace(calibration, panel_weight=cold_panel_weight)
        cold_scores = ColdScores(spec, calibration, _panel_inputs(spec, calibration.reference_users))
    version = ContentComponent.version_in(bundle)
    model = RankerModel(bundle.id, component.model, spec, scorer, component.popularity, cold_scores, version, precision)
    _smoke_test(model)
    return model


def _graph(bundle: Bundle, component: RankerComponent, precision: str) -> tuple[Path, str]:
    """(the graph to serve, its precision): int8 only when asked for and in the bundle."""
    if precision == "int8" and component.int8_path is not None:
        log.info("bundle %s: serving the int8 graph (AUC %s vs fp32 %s on %s %s rows)", bundle.id,
                 component.int8.get("auc_int8"), component.int8.get("auc_fp32"), component.int8.get("rows"),
                 component.int8.get("eval"))  # fmt: skip
        return component.int8_path, "int8"
    if precision == "int8":
        reason = component.int8.get("reason", "it was written before int8 graphs were")
        log.warning("ENCORE_RANKER_PRECISION=int8, but bundle %s has no int8 graph (%s): serving fp32", bundle.id,
                    reason)  # fmt: skip
    elif precision != "fp32":
        raise BundleError(f"ranker precision {precision!r}: expected fp32 or int8")
    assert component.onnx_path is not None  # set by RankerComponent.read
    return component.onnx_path, "fp32"


def _panel_inputs(spec: FeatureSpec, users: list[dict]) -> dict[str, np.ndarray]:
    """Packed inputs of the reference panel, one row each (their item inputs are never used)."""
    rows = []
    for user in users:
        profile = {name: value for name, value in user.items() if name != fn.USER_ID}
        frame = build_frame(spec, str(user[fn.USER_ID]), profile, TrackFeatures.unknown(["?"]))
        rows.append(spec.encode_packed(frame))
    return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}


def _smoke_test(model: RankerModel) -> None:
    """Encode and score two all-unknown rows through the serving path, so a broken graph is refused now."""
    items = TrackFeatures.unknown(["?", "?"])
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
