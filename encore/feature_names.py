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

# Push sources (the embedder pushes new uploads through these).
TRACK_META_PUSH = "track_meta_push"
TRACK_CONTENT_PUSH = "track_content_push"

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

VIEW_FIELDS: dict[str, tuple[str, ...]] = {
    USER_PROFILE: USER_PROFILE_FIELDS,
    TRACK_META: TRACK_META_FIELDS,
    TRACK_CONTENT: TRACK_CONTENT_FIELDS,
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
}
assert set(FIELD_DTYPES) == {name for fields in VIEW_FIELDS.values() for name in fields}
VIEW_ENTITY_KEY: dict[str, str] = {USER_PROFILE: USER_ID, TRACK_META: TRACK_ID, TRACK_CONTENT: TRACK_ID}
TRACK_VIEWS: tuple[str, ...] = (TRACK_META, TRACK_CONTENT)
PUSH_SOURCE_OF_VIEW: dict[str, str] = {TRACK_META: TRACK_META_PUSH, TRACK_CONTENT: TRACK_CONTENT_PUSH}
