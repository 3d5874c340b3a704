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


def test_recent_event_features_reach_the_frame_of_a_spec_that_reads_them() -> None:
    from encore import feature_names as fn
    from encore.ranker_frame import TrackFeatures, build_frame, uses_activity
    from encore.schema import FieldConfig

    row = {"recent_tracks": ["a"], "recent_types": ["skip"], "n_play": 3, "n_skip": 1, "n_like": 0, "n_dislike": 2,
           "skip_rate": 0.25, "profile": [0.1], "profile_n": 3}  # fmt: skip
    fields = [FieldConfig("age", "numeric", owner="user"), FieldConfig("skip_rate", "numeric", owner="user"),
              FieldConfig("n_dislike", "numeric", owner="user")]  # fmt: skip
    assert uses_activity(fields) and not uses_activity(fields[:1])
    user = Recent.from_row(row).user_row({fn.USER_ID: "u", "age": 30})
    frame = build_frame(fields, "u", user, TrackFeatures.unknown(["t1", "t2"]))
    assert frame["age"].tolist() == [30, 30]
    assert frame["skip_rate"].tolist() == [0.25, 0.25] and frame["n_dislike"].tolist() == [2.0, 2.0]
    empty = build_frame(fields, "u", Recent.from_row(None).user_row(None), TrackFeatures.unknown(["t1"]))
    assert empty["skip_rate"].tolist() == [0.0] and empty["n_dislike"].tolist() == [0.0]  # no events: 0, not OOV
