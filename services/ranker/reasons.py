"""A short reason a listener can read beside each recommended track, from what the ranker already holds.

"Sounds like <a track you played>": the played track (the listener's recent plays and likes, then the training
plays the retriever sends with the candidates) whose stored content vector is closest, by cosine, to the
recommended track's, when it is at least SOUNDS_LIKE_MIN close.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from encore import feature_names as fn
from encore.audio.encoder import parse_tags
from encore.ranker_frame import TrackFeatures

SOUND_TAGS = 3  # MusiCNN's MTT head names genres and instruments ("classical", "strings", "drums")
# Cosine of two tracks' stored content vectors (MusiCNN's penultimate, standardized and bounded) from which one is
# said to sound like the other. On the demo world (600 tracks) a track's nearest other track sits at a median
# cosine of 0.80 (10th percentile 0.68), while 1.8% of random pairs reach 0.65.
SOUNDS_LIKE_MIN = 0.65
MAX_PLAYED = 40  # played tracks compared per request


def sound_tags(tags: str | None) -> list[str]:
    """The track's top MTT tags (genres, instruments, moods), most probable first; [] when it has none."""
    return parse_tags(tags).get("mtt", [])


def played_tracks(recent: Sequence[str], history: Sequence[str]) -> list[str]:
    """The tracks a reason may name: recent plays first (newest first), then training plays, at most MAX_PLAYED."""
    return list(dict.fromkeys([*recent, *history]))[:MAX_PLAYED]


def sounds_like(
    items: TrackFeatures, rows: Sequence[int], played: TrackFeatures, min_cosine: float = SOUNDS_LIKE_MIN
) -> dict[int, str]:
    """row in `items` -> the played track that sounds most like it (cosine >= min_cosine), for `rows` only."""
    candidates, references = unit_vectors(items, rows), unit_vectors(played, range(len(played)))
    if candidates is None or references is None or candidates[0].shape[1] != references[0].shape[1]:
        return {}
    (vectors, ok), (refs, ref_ok) = candidates, references
    cosine = np.where(ref_ok[None, :], vectors @ refs.T, -np.inf)
    best_two = np.argsort(-cosine, axis=1, kind="stable")[:, :2]  # the best other than the track itself
    alike: dict[int, str] = {}
    for j, row in enumerate(rows):
        if not ok[j]:
            continue
        for best in best_two[j].tolist():
            name = played.track_ids[best]
            if name != items.track_ids[row] and cosine[j, best] >= min_cosine:
                alike[row] = name
                break
    return alike


def unit_vectors(features: TrackFeatures, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """(unit content vectors of `rows`, which of them hold real content), or None when none can be compared."""
    matrix = features.columns.get("embedding")
    if matrix is None or matrix.ndim != 2 or matrix.shape[1] == 0 or not len(rows):
        return None
    rows = list(rows)
    vectors = np.asarray(matrix[rows], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    ok = features.valid[fn.TRACK_CONTENT][rows] & (norms > 1e-6)
    return vectors / np.maximum(norms, 1e-6)[:, None], ok


def track_name(track_id: str) -> str:
    """How a reason names a track: "track 340" for a bare number (the demo world's ids), else the id itself."""
    return f"track {track_id}" if track_id.isdigit() else track_id


def reason(*, cold: bool, genre: str | None, tags: str | None, like: str | None = None) -> str:
    """e.g. "new track that sounds like brahms-intermezzo, which you played", "jazz, played by listeners like
    you; sounds classical, violin, strings"."""
    sound = sound_tags(tags)[:SOUND_TAGS]
    heard = f"sounds like {track_name(like)}, which you played" if like else ""
    heard = heard or (f"sounds {', '.join(sound)}" if sound else "")
    if cold:
        return f"new track that {heard}" if heard else "new track whose sound suits your plays"
    listeners = f"{genre}, played by listeners like you" if genre else "played by listeners like you"
    return f"{listeners}; {heard}" if heard else listeners
