"""A fold-in listener's candidates are ordered by the model's rank and how close they sound to the plays, the
uploads closest first (services/ranker/foldin.py)."""

import numpy as np

from encore import feature_names as fn
from encore.ranker_frame import TrackFeatures
from services.ranker.foldin import content_closeness
from services.ranker.pipeline import FOLDIN_SOURCE, Candidates, Order


def _features(ids: list[str], vectors: list[list[float]], has_content: list[bool] | None = None) -> TrackFeatures:
    n = len(ids)
    columns = {"embedding": np.asarray(vectors, np.float32), "genre": np.full(n, None, dtype=object)}
    mask = np.asarray(has_content if has_content is not None else [True] * n)
    return TrackFeatures(ids, columns, {view: mask for view in fn.TRACK_VIEWS})


# Three catalog tracks and four uploads; the listener played "violin" only.
IDS = ["w1", "drums", "w2", "strings", "piano", "cello", "w3"]
VECTORS = [[1, 0.3, 0], [0, 1, 0], [0, 0, 1], [1, 0.2, 0], [0.8, 0.6, 0], [1, 0.1, 0], [1, 0.1, 0.05]]
COLD = {"w1": False, "drums": True, "w2": False, "strings": True, "piano": True, "cello": True, "w3": False}
# The model's scores for a listener it does not know: item-only, the uploads near-tied, the farthest-sounding
# upload above the others.
SCORES = np.array([0.70, 0.62, 0.40, 0.61, 0.61, 0.60, 0.30], np.float32)
PLAYED = _features(["violin"], [[1, 0.1, 0]])


def _order(source: str, has_content: list[bool] | None = None) -> list[str]:
    items = _features(IDS, VECTORS, has_content)
    ranked = Order()(Candidates(IDS, COLD, source), items, SCORES, k=7, played=PLAYED)
    return [item.track_id for item in ranked]


def test_closeness_is_the_mean_cosine_to_the_plays_and_nan_without_content() -> None:
    two = _features(["violin", "drum"], [[1, 0.1, 0], [0, 1, 0]])
    closeness = content_closeness(_features(IDS, VECTORS, [True] * 5 + [False, True]), two)
    strings = np.asarray(VECTORS[3]) / np.linalg.norm(VECTORS[3])
    cosines = [strings @ np.asarray([1, 0.1, 0]) / np.sqrt(1.01), strings @ np.asarray([0, 1, 0])]
    assert np.isclose(closeness[3], np.mean(cosines)) and np.isnan(closeness[5])


def test_a_fold_in_listeners_first_upload_is_the_one_that_sounds_closest_to_the_plays() -> None:
    # The model alone puts drums (cosine 0.10 to violin) first of the uploads; blended with the sound rank, the
    # uploads' ranks (2-5) go to cello (cosine 1.0), strings (0.995), piano (0.86), then drums. The catalog tracks
    # keep the model's order: w3 sounds closer than w2 (0.999 against 0) but stays behind it.
    assert _order(FOLDIN_SOURCE) == ["w1", "cello", "strings", "piano", "drums", "w2", "w3"]
    # An upload without content to compare ranks last by sound: cello falls behind every upload that has some,
    # and behind w2 (the blend gives uploads ranks 2-4 and 6).
    no_cello = [True] * 5 + [False, True]
    assert _order(FOLDIN_SOURCE, no_cello) == ["w1", "strings", "piano", "drums", "w2", "cello", "w3"]


def test_a_known_listener_is_ordered_by_the_model_alone() -> None:
    assert _order("bpr") == ["w1", "drums", "strings", "piano", "cello", "w2", "w3"]
