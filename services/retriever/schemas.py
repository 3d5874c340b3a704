"""Request and response models of the retriever API, with the examples OpenAPI shows."""

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.patterns import BUNDLE_ID_PATTERN, MAX_ABS_CONTENT, TRACK_ID_PATTERN

MAX_CONTENT_DIM = 8192  # longer than any encoder's vector; bounds the work one request can ask for


class CandidateOut(BaseModel):
    track_id: str = Field(description="Track id as in the feature store")
    score: float = Field(description="User-item dot product (recall model) or training play count (popularity)")
    cold: bool = Field(description="True for a track added after the bundle was built (projected content vector)")

    model_config = ConfigDict(json_schema_extra={"examples": [{"track_id": "t00042", "score": 3.71, "cold": False}]})


class CandidatesResponse(BaseModel):
    user_id: str
    known_user: bool = Field(description="False when the bundle has no vector for this user")
    source: str = Field(
        description="For known users the bundle's recall model in lower case (bpr, vbpr, freedom, lgmrec); "
        "foldin for a user the bundle does not know whose played tracks it holds (mean of their vectors); "
        "popularity otherwise"
    )
    bundle_id: str = Field(description="The bundle that answered")
    candidates: list[CandidateOut] = Field(description="Best first; tracks the user already played are left out")
    history: list[str] = Field(
        default_factory=list,
        description="Up to 30 of a known user's training plays, those closest to the user's vector (the ranker's "
        "'sounds like a track you played' reasons); empty for other users",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u0007",
                    "known_user": True,
                    "source": "bpr",
                    "bundle_id": "synthetic-20261122",
                    "candidates": [
                        {"track_id": "t00042", "score": 3.71, "cold": False},
                        {"track_id": "upload-9f2c", "score": 3.12, "cold": True},
                    ],
                    "history": ["t00007", "t00311"],
                }
            ]
        }
    )


class ItemIn(BaseModel):
    """Validated like an upload: the embedder's id pattern and finite values here; the content bound
    (ENCORE_RETRIEVER_MAX_ABS_CONTENT) in the route; the length and the encoder against the bundle's projection."""

    track_id: str = Field(pattern=TRACK_ID_PATTERN, description="Store key of the track (same rule as /embed)")
    embedding: list[float] = Field(
        min_length=1,
        max_length=MAX_CONTENT_DIM,
        description="The track's content vector (track_content.embedding); finite, each |value| at most "
        f"ENCORE_RETRIEVER_MAX_ABS_CONTENT (default {MAX_ABS_CONTENT})",
    )
    encoder: str = Field(min_length=1, max_length=64, description="Backend that produced the vector; must match")
    encoder_revision: str = Field(min_length=1, max_length=128, description="Its revision; must match the bundle's")

    @field_validator("embedding")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        bad = next((i for i, x in enumerate(values) if not math.isfinite(x)), None)
        if bad is not None:
            raise ValueError(f"value {bad} is not finite")
        return values

    def beyond(self, bound: float) -> int | None:
        """The index of the first value with |x| > bound, or None."""
        return next((i for i, x in enumerate(self.embedding) if abs(x) > bound), None)

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "track_id": "upload-9f2c",
                    "embedding": [0.12, -0.5, 1.3],
                    "encoder": "mfcc",
                    "encoder_revision": "1",
                }
            ]
        }
    )


class ItemOut(BaseModel):
    track_id: str
    status: Literal["added", "replaced", "in_bundle"] = Field(
        description="in_bundle: the bundle already has a trained vector for this track, which is kept"
    )
    bundle_id: str
    cold_items: int = Field(description="Cold tracks now retrievable")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"track_id": "upload-9f2c", "status": "added", "bundle_id": "synthetic-20261122", "cold_items": 1}
            ]
        }
    )


class ReloadRequest(BaseModel):
    bundle_id: str | None = Field(
        default=None, pattern=BUNDLE_ID_PATTERN, description="A folder under the artifacts dir; default: CURRENT"
    )

    model_config = ConfigDict(json_schema_extra={"examples": [{"bundle_id": "synthetic-20261122"}, {}]})


class ReloadResponse(BaseModel):
    bundle_id: str
    previous_bundle_id: str | None
    n_users: int
    n_items: int
    cold_items: int

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "bundle_id": "synthetic-20261123",
                    "previous_bundle_id": "synthetic-20261122",
                    "n_users": 2000,
                    "n_items": 10000,
                    "cold_items": 3,
                }
            ]
        }
    )
