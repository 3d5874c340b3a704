"""Request and response models of the retriever API, with the examples OpenAPI shows."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BUNDLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # encore.artifacts' rule: never a path outside root


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
        "popularity otherwise"
    )
    bundle_id: str = Field(description="The bundle that answered")
    candidates: list[CandidateOut] = Field(description="Best first; tracks the user already played are left out")

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
                }
            ]
        }
    )


class ItemIn(BaseModel):
    track_id: str = Field(min_length=1, max_length=256)
    embedding: list[float] = Field(min_length=1, description="The track's content vector (track_content.embedding)")
    encoder: str = Field(min_length=1, description="Backend that produced the vector; must match the bundle's")
    encoder_revision: str = Field(min_length=1, description="Its revision; must match the bundle's")

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


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong, in one sentence")
    serving_bundle_id: str | None = Field(default=None, description="For a refused reload: the bundle still serving")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "bundle synthetic-20261123: checksum mismatch for retriever/item_vectors.npy",
                    "serving_bundle_id": "synthetic-20261122",
                }
            ]
        }
    )
