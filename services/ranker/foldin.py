"""How the ranker orders a fold-in listener's candidates: uploads placed and ordered by how close they sound.

For a listener the bundle does not know (candidate_source "foldin"), the model's score depends on the item only
(the user inputs are OOV): the same for every such listener, so it cannot say which tracks suit this one. New
uploads' calibrated scores come out tied or nearly so, and how many of them reached the top-10 was an accident of
the bundle's calibration (0 of 10 on one bootstrap, 8-9 on another, drum & bass first for a classical listener).
The personal signal the ranker holds for every candidate, catalog track or upload alike, is its stored content
vector against the played tracks' (both read for the "sounds like" reasons anyway). Closeness is a candidate's mean
cosine to the played tracks' content vectors (the cosine to the mean of their unit vectors: the fold-in, in
content space); a candidate without content ranks last by it. For "foldin" only:
- which ranks hold uploads: the candidates ordered by the mean of the model's rank and the closeness rank (ties:
  the model's rank, then retrieval order);
- the uploads fill those ranks closest first (their model scores, item-only and near-tied, tell nothing about this
  listener), so the first upload shown is the one that sounds most like the plays;
- catalog tracks fill the other ranks in the model's order, as before: among them the retriever's fold-in already
  chose by the listener's plays, and the content of the rendered catalog is a weaker guide to taste than that (a
  blend there too left tests/test_events_e2e.py's folk listener 4 folk tracks of 20, classical renders taking 10).
Known listeners and popularity answers keep the model's order.
"""

from __future__ import annotations

import numpy as np

from encore.ranker_frame import TrackFeatures
from services.ranker.reasons import unit_vectors


def content_closeness(items: TrackFeatures, played: TrackFeatures) -> np.ndarray:
    """Each candidate's mean cosine to the played tracks' content vectors; NaN where the candidate, or every
    played track, has no content (or the widths differ: vectors of another bundle)."""
    n = len(items.track_ids)
    closeness = np.full(n, np.nan)
    candidates, references = unit_vectors(items, range(n)), unit_vectors(played, range(len(played)))
    if candidates is None or references is None or candidates[0].shape[1] != references[0].shape[1]:
        return closeness
    (vectors, ok), (refs, ref_ok) = candidates, references
    if ref_ok.any():
        closeness[ok] = (vectors[ok] @ refs[ref_ok].T).mean(axis=1)
    return closeness


def ranks(key: np.ndarray) -> np.ndarray:
    """0 for the largest value, 1 for the next, ...; NaN ranks last; ties keep row order."""
    order = np.argsort(-np.nan_to_num(key, nan=-np.inf), kind="stable")
    out = np.empty(len(key), np.int64)
    out[order] = np.arange(len(key))
    return out


def foldin_order(scores: np.ndarray, closeness: np.ndarray, cold: np.ndarray) -> np.ndarray:
    """Every candidate's row, best first (`cold`: which rows are uploads): the ranks that model rank + sound rank
    (ties: model rank; lexsort's last key is the primary one) gives uploads go to the uploads by closeness, the
    others to the catalog tracks in the model's order."""
    model, sound = ranks(scores), ranks(closeness)
    order = np.lexsort((model, model + sound))
    held = cold[order]
    uploads, warm = np.flatnonzero(cold), np.flatnonzero(~cold)
    order[held] = uploads[np.argsort(sound[uploads], kind="stable")]
    order[~held] = warm[np.argsort(model[warm], kind="stable")]
    return order
