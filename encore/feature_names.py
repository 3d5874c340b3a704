"""Names shared by the Feast definitions (feature_repo/) and the code that reads or writes features.

Services and training import names from here, never from the Feast definitions (importing feast is slow).
"""

from __future__ import annotations

# Entities and their join keys.
USER = "user"
TRACK = "track"
USER_ID = "user_id"
TRACK_ID = "track_id"

# Timestamp columns every source frame carries (push needs the created column too).
EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created"

# Feature views.
USER_PROFILE = "user_profile"
TRACK_META = "track_meta"
TRACK_CONTENT = "track_content"
USER_ACTIVITY = "user_activity"  # real-time listening features, pushed by POST /events (encore/events.py)

# The offline listening log: parquet parts of every accepted event (a Feast FileSource, not a view).
EVENTS = "events"
EVENT_ID = "event_id"
EVENT_LOG_FIELDS: tuple[str, ...] = ("event_id", "user_id", "track_id", "type", "ms")  # + the two timestamps

# Push sources (the embedder pushes new uploads through these).
TRACK_META_PUSH = "track_meta_push"
TRACK_CONTENT_PUSH = "track_content_push"
USER_ACTIVITY_PUSH = "user_activity_push"

# Feature service: the ranker's contract with the store, one per model version.
RANKER_SERVICE = "ranker_v1"

# Field names per view, in schema order (entity key not included).
USER_PROFILE_FIELDS: tuple[str, ...] = ("country", "age", "gender", "n_plays", "n_tracks")
TRACK_META_FIELDS: tuple[str, ...] = (
    "artist_id",
    "genre",
    "key",
    "mode",
    "language",
    "release_year",
    "popularity",
)
# track_meta of a track whose metadata is not given (an upload): the store's "unknown" values. popularity is
# computed by training over its play window, so a new track starts at 0. The bootstrap trains the ranker on
# rows shown this way too, so that an upload is scored as the cold track it is.
NEW_TRACK_META: dict[str, str | int | float] = {
    "artist_id": "",
    "genre": "",
    "key": -1,
    "mode": -1,
    "language": "",
    "release_year": -1,
    "popularity": 0.0,
}
assert tuple(NEW_TRACK_META) == TRACK_META_FIELDS  # the store refuses anything else
TRACK_CONTENT_FIELDS: tuple[str, ...] = ("embedding", "tokens", "encoder", "encoder_revision", "typicality", "tags")
TRACK_CONTENT_ARRAYS: tuple[str, ...] = ("embedding", "tokens")  # list-valued; the other content fields are scalars

# user_activity: the listener's most recent events (track ids and types, newest first), counts by type, skip rate
# and the running content profile (mean embedding of positively labelled tracks, see docs/events.md).
USER_ACTIVITY_FIELDS: tuple[str, ...] = (
    "recent_tracks",
    "recent_types",
    "n_play",
    "n_skip",
    "n_like",
    "n_dislike",
    "skip_rate",
    "profile",
    "profile_n",
)

VIEW_FIELDS: dict[str, tuple[str, ...]] = {
    USER_PROFILE: USER_PROFILE_FIELDS,
    TRACK_META: TRACK_META_FIELDS,
    TRACK_CONTENT: TRACK_CONTENT_FIELDS,
    USER_ACTIVITY: USER_ACTIVITY_FIELDS,
}
VIEW_ENTITY_KEY: dict[str, str] = {
    USER_PROFILE: USER_ID,
    TRACK_META: TRACK_ID,
    TRACK_CONTENT: TRACK_ID,
    USER_ACTIVITY: USER_ID,
}
# Feast dtype of every view field, as str(Field.dtype); encore.store checks that features.py declares the same
# (the Feast-free online reader decodes by these).
FIELD_DTYPES: dict[str, str] = {
    "country": "String",
    "age": "Int64",
    "gender": "String",
    "n_plays": "Int64",
    "n_tracks": "Int64",
    "artist_id": "String",
    "genre": "String",
    "key": "Int64",
    "mode": "Int64",
    "language": "String",
    "release_year": "Int64",
    "popularity": "Float32",
    "embedding": "Array(Float32)",
    "tokens": "Array(Int64)",
    "encoder": "String",
    "encoder_revision": "String",
    "typicality": "Float32",
    "tags": "String",
    "recent_tracks": "Array(String)",
    "recent_types": "Array(String)",
    "n_play": "Int64",
    "n_skip": "Int64",
    "n_like": "Int64",
    "n_dislike": "Int64",
    "skip_rate": "Float32",
    "profile": "Array(Float32)",
    "profile_n": "Int64",
}
assert set(FIELD_DTYPES) == {name for fields in VIEW_FIELDS.values() for name in fields}
TRACK_VIEWS: tuple[str, ...] = (TRACK_META, TRACK_CONTENT)
PUSH_SOURCE_OF_VIEW: dict[str, str] = {
    TRACK_META: TRACK_META_PUSH,
    TRACK_CONTENT: TRACK_CONTENT_PUSH,
    USER_ACTIVITY: USER_ACTIVITY_PUSH,
}
