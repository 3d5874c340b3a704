"""The ranker's reading of user_activity: which recent tracks are excluded and which feed a fold-in."""

from services.ranker.pipeline import Recent


def test_latest_event_per_track_decides() -> None:
    row = {
        "recent_tracks": ["a", "b", "a", "c", "d", "e"],  # newest first
        "recent_types": ["skip", "like", "play", "play", "dislike", "play"],
    }
    recent = Recent.from_row(row)
    assert recent.exclude == ["a", "b", "c", "d", "e"]
    assert recent.played == ["b", "c", "e"]  # "a" was played, then skipped: not a positive any more


def test_no_row_means_nothing_recent() -> None:
    assert Recent.from_row(None) == Recent([], []) == Recent.from_row({"recent_tracks": []})
