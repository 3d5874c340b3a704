"""Encore's Feast definitions, top-down: entities, sources, feature views, push sources, feature services.

Offline sources are folders of parquet part files under $ENCORE_FEAST_DATA_DIR/offline/<view>/
(default: data/feast/ under the repository root); encore.store places them under its own data dir.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float32, Int64, String

from encore import feature_names as fn
from encore.settings import EncoreSettings

DATA_DIR = EncoreSettings().feast_data_dir  # ENCORE_FEAST_DATA_DIR, default data/feast/
OFFLINE_DIR = DATA_DIR / "offline"

# Catalog and profile features do not expire: a track's audio never changes, and a profile stays valid
# until the next training run replaces it. timedelta(0) is Feast's "no TTL".
NO_TTL = timedelta(0)

# --- Entities -----------------------------------------------------------------------------------------

user = Entity(name=fn.USER, join_keys=[fn.USER_ID], value_type=ValueType.STRING, description="A listener.")
track = Entity(name=fn.TRACK, join_keys=[fn.TRACK_ID], value_type=ValueType.STRING, description="A track.")

# --- Offline (batch) sources: written by training, appended to by pushes ------------------------------


def parquet_source(view_name: str) -> FileSource:
    """The folder of parquet parts that holds one view's offline rows."""
    return FileSource(
        name=f"{view_name}_parquet",
        path=str(OFFLINE_DIR / view_name),
        timestamp_field=fn.EVENT_TIMESTAMP,
        created_timestamp_column=fn.CREATED_TIMESTAMP,
    )


user_profile_source = parquet_source(fn.USER_PROFILE)
track_meta_source = parquet_source(fn.TRACK_META)
track_content_source = parquet_source(fn.TRACK_CONTENT)
user_activity_source = parquet_source(fn.USER_ACTIVITY)

# The listening log: one row per accepted event (POST /events on the embedder), appended as parquet parts and
# compacted (encore/events.py). Training joins features onto these rows as of each event's time.
events_source = FileSource(
    name=f"{fn.EVENTS}_parquet",
    path=str(OFFLINE_DIR / fn.EVENTS),
    timestamp_field=fn.EVENT_TIMESTAMP,
    created_timestamp_column=fn.CREATED_TIMESTAMP,
    description="Listening events: event_id, user_id, track_id, type (play|skip|like|dislike), ms (-1: not given).",
)

# --- Push sources: an uploaded track is live at once, and its rows feed the same views --------------

track_meta_push_source = PushSource(name=fn.TRACK_META_PUSH, batch_source=track_meta_source)
track_content_push_source = PushSource(name=fn.TRACK_CONTENT_PUSH, batch_source=track_content_source)
# Listening events update a listener's real-time features at once (encore/events.py pushes them online).
user_activity_push_source = PushSource(name=fn.USER_ACTIVITY_PUSH, batch_source=user_activity_source)

# --- Feature views (each schema defined once; a push-backed view reads its batch source too) ---------

user_profile_fields = [
    Field(name="country", dtype=String, description="Country code the user registered with."),
    Field(name="age", dtype=Int64, description="Age in years at registration; -1 when unknown."),
    Field(name="gender", dtype=String, description="Self-reported gender; empty when unknown."),
    Field(name="n_plays", dtype=Int64, description="Plays in the training window."),
    Field(name="n_tracks", dtype=Int64, description="Distinct tracks played in the training window."),
]
track_meta_fields = [
    Field(name="artist_id", dtype=String, description="Id of the track's main artist."),
    Field(name="genre", dtype=String, description="Primary genre label."),
    Field(name="key", dtype=Int64, description="Pitch class of the key, 0-11; -1 when unknown."),
    Field(name="mode", dtype=Int64, description="1 major, 0 minor; -1 when unknown."),
    Field(name="language", dtype=String, description="Language of the lyrics; empty when instrumental."),
    Field(name="release_year", dtype=Int64, description="Year of first release."),
    Field(name="popularity", dtype=Float32, description="Share of training-window plays; 0 for new tracks."),
]
track_content_fields = [
    Field(name="embedding", dtype=Array(Float32), description="Dense audio vector (one encoder layer)."),
    Field(name="tokens", dtype=Array(Int64), description="Audio tokens: nearest codebook id per layer."),
    Field(name="encoder", dtype=String, description="Encoder backend that produced the content."),
    Field(name="encoder_revision", dtype=String, description="Model revision and codebook version."),
    Field(
        name="typicality",
        dtype=Float32,
        description="Share of catalog tracks at least as far from the catalog centre (1 typical, 0 beyond all).",
    ),
    Field(name="tags", dtype=String, description="Encoder's top tags as 'head:tag' items, comma-separated."),
]
user_activity_fields = [
    Field(name="recent_tracks", dtype=Array(String), description="Tracks of the latest events, newest first."),
    Field(name="recent_types", dtype=Array(String), description="Types of those events (play, skip, like, dislike)."),
    Field(name="n_play", dtype=Int64, description="Play events so far."),
    Field(name="n_skip", dtype=Int64, description="Skip events so far."),
    Field(name="n_like", dtype=Int64, description="Like events so far."),
    Field(name="n_dislike", dtype=Int64, description="Dislike events so far."),
    Field(name="skip_rate", dtype=Float32, description="n_skip / (n_play + n_skip); 0 before either."),
    Field(name="profile", dtype=Array(Float32), description="Mean content embedding of positively labelled tracks."),
    Field(name="profile_n", dtype=Int64, description="Events averaged into profile (0: profile is empty)."),
]

user_profile_fv = FeatureView(
    name=fn.USER_PROFILE,
    entities=[user],
    ttl=NO_TTL,
    schema=user_profile_fields,
    source=user_profile_source,
    online=True,
    description="Profile and training-window activity of a user.",
)
track_meta_fv = FeatureView(
    name=fn.TRACK_META,
    entities=[track],
    ttl=NO_TTL,
    schema=track_meta_fields,
    source=track_meta_push_source,
    online=True,
    description="Catalog metadata of a track.",
)
track_content_fv = FeatureView(
    name=fn.TRACK_CONTENT,
    entities=[track],
    ttl=NO_TTL,
    schema=track_content_fields,
    source=track_content_push_source,
    online=True,
    description="Audio content of a track: embedding and tokens, with the encoder that made them.",
)
user_activity_fv = FeatureView(
    name=fn.USER_ACTIVITY,
    entities=[user],
    ttl=NO_TTL,
    schema=user_activity_fields,
    source=user_activity_push_source,
    online=True,
    description="A listener's real-time activity from POST /events (docs/events.md).",
)

# --- Feature services: one per ranker version --------------------------------------------------------

ranker_v1 = FeatureService(
    name=fn.RANKER_SERVICE,
    features=[user_profile_fv, track_meta_fv, track_content_fv],
    description="Everything the v1 ranker reads: user profile, track metadata and audio content.",
)
