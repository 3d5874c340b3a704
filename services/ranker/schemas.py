"""Request and response models of the ranker's HTTP API, with the examples OpenAPI shows."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.common.patterns import BUNDLE_ID_PATTERN


class RecommendedTrack(BaseModel):
    track_id: str = Field(description="Track id")
    score: float = Field(description="Click probability from the CTR model")
    rank: int = Field(ge=1, description="1 = best")
    artist_id: str | None = Field(description="From track_meta; null when the store has no meta for the track")
    genre: str | None = Field(description="From track_meta; null when unknown")
    release_year: int | None = Field(description="From track_meta; null when unknown")
    cold: bool = Field(description="The retriever found the track through its content vector (no interactions)")
    reason: str = Field(description="Why, in words: the genre and the track's top sound tags, or that it is new")
    tags: list[str] = Field(default=[], description="The track's top sound tags (MusiCNN MTT), most probable first")
    query_match: float | None = Field(
        default=None,
        description="With `q`: mean cosine between the query and the track's top tags (MTT and MSD); null without "
        "`q` or when the track has no tags",
    )


class RecommendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u42",
                    "bundle_id": "synthetic-20260101",
                    "model": "DCNv2",
                    "degraded": False,
                    "degraded_reason": None,
                    "candidate_source": "bpr",
                    "items": [
                        {
                            "track_id": "t1007",
                            "score": 0.8731,
                            "rank": 1,
                            "artist_id": "a17",
                            "genre": "jazz",
                            "release_year": 1965,
                            "cold": False,
                            "reason": "jazz, played by listeners like you; sounds jazz, piano, guitar",
                            "tags": ["jazz", "piano", "guitar", "slow", "soft"],
                        },
                        {
                            "track_id": "t2210",
                            "score": 0.8102,
                            "rank": 2,
                            "artist_id": None,
                            "genre": None,
                            "release_year": None,
                            "cold": True,
                            "reason": "new track that sounds classical, violin, strings",
                            "tags": ["classical", "violin", "strings", "slow", "soft"],
                        },
                    ],
                }
            ]
        }
    )

    user_id: str
    query: str | None = Field(default=None, description="The free-text query `q` that steered the order, if any")
    bundle_id: str = Field(description="The artifact bundle whose model scored this answer")
    model: str = Field(description="CTR model name, e.g. DCNv2")
    degraded: bool = Field(description="True when a fallback served part of the answer (see degraded_reason)")
    degraded_reason: str | None = Field(description="Why, e.g. 'retriever unavailable: ...'; null when not degraded")
    candidate_source: str = Field(
        description="The retriever's source (e.g. 'bpr'); 'foldin' for a listener the bundle does not know, from the "
        "tracks they played (POST /events); 'popularity' otherwise or as fallback"
    )
    items: list[RecommendedTrack] = Field(description="At most k tracks, best first")


class ReloadRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"bundle_id": "synthetic-20260102"}, {}]})

    bundle_id: str | None = Field(
        default=None,
        pattern=BUNDLE_ID_PATTERN,
        description="A folder under ENCORE_ARTIFACTS_DIR; omitted: the bundle artifacts/CURRENT names",
    )


class ReloadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"bundle_id": "synthetic-20260102", "previous_bundle_id": "synthetic-20260101"}]
        }
    )

    bundle_id: str = Field(description="The bundle now serving")
    previous_bundle_id: str | None = Field(description="The bundle served before; null when none was loaded")
