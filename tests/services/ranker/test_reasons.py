"""The reason beside each recommended track reads the stored tags (encore.audio.encoder.format_tags)."""

import numpy as np

from encore import feature_names as fn
from encore.audio.encoder import format_tags
from encore.ranker_frame import TrackFeatures
from services.ranker.reasons import played_tracks, reason, sounds_like

TAGS = format_tags({"mtt": ["classical", "violin", "strings", "slow", "cello"], "msd": ["jazz", "oldies"]})


def test_an_upload_is_described_by_its_sound_and_a_catalog_track_by_genre_and_sound() -> None:
    assert reason(cold=True, genre=None, tags=TAGS) == "new track that sounds classical, violin, strings"
    assert (
        reason(cold=False, genre="jazz", tags=TAGS)
        == "jazz, played by listeners like you; sounds classical, violin, strings"
    )
    assert reason(cold=False, genre=None, tags="") == "played by listeners like you"
    assert reason(cold=True, genre="folk", tags=None) == "new track whose sound suits your plays"


def _features(ids: list[str], vectors: list[list[float]], has_content: list[bool]) -> TrackFeatures:
    n = len(ids)
    columns = {"embedding": np.asarray(vectors, np.float32), "genre": np.full(n, None, dtype=object)}
    valid = {view: np.asarray(has_content) for view in fn.TRACK_VIEWS}
    return TrackFeatures(ids, columns, valid)


def test_a_track_is_said_to_sound_like_the_closest_played_track_only_when_close_enough() -> None:
    items = _features(
        ["a", "b", "c", "d", "p1"],
        [[1, 0, 0], [0, 1, 0.1], [0, 0, 1], [5, 5, 0], [1, 0, 0]],
        [True, True, True, False, True],
    )
    played = _features(["p1", "p2", "p3"], [[1, 0.1, 0], [0, 2, 0], [1, 1, 1]], [True, True, False])
    alike = sounds_like(items, [0, 1, 2, 3, 4], played)
    # a: p1 (cosine 0.995); b: p2 (p3 would be closer but holds no content); c: nothing reaches 0.5;
    # d: no content of its own; p1 itself: never "sounds like itself", p2 is too far.
    assert alike == {0: "p1", 1: "p2"}
    assert sounds_like(items, [1], played, min_cosine=0.999) == {}
    assert reason(cold=True, genre=None, tags=TAGS, like="p1") == "new track that sounds like p1, which you played"
    assert reason(cold=False, genre="jazz", tags=TAGS, like="340") == (
        "jazz, played by listeners like you; sounds like track 340, which you played"
    )
    other_width = _features(["q"], [[1.0, 0.0]], [True])
    assert sounds_like(items, [0], other_width) == {}  # vectors of another bundle's width are not compared


def test_played_tracks_put_recent_plays_first_without_repeats() -> None:
    assert played_tracks(["r2", "r1"], ["h1", "r1", "h2"]) == ["r2", "r1", "h1", "h2"]
