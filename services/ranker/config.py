"""Ranker settings, each from an ENCORE_* environment variable (e.g. ENCORE_RETRIEVER_URL, ENCORE_MAX_K)."""

from __future__ import annotations

from pydantic import Field, model_validator

from services.common.settings import ServiceSettings


class RankerSettings(ServiceSettings):
    """The feature store location comes from ENCORE_FEAST_* (see encore.store.StoreSettings.from_env)."""

    port: int = 8000
    retriever_url: str = "http://127.0.0.1:8001"
    retriever_timeout_s: float = Field(0.5, gt=0)  # whole request; past it the popularity fallback serves
    candidates: int = Field(200, ge=1, le=5000)  # asked from the retriever, then scored
    default_k: int = Field(20, ge=1)
    max_k: int = Field(100, ge=1)
    onnx_threads: int = Field(1, ge=1)  # intra-op threads of the ONNX session
    user_cache_ttl_s: float = Field(60.0, ge=0)  # user profiles change once per training run
    user_cache_size: int = Field(100_000, ge=1)
    track_table_max_age_s: float = Field(300.0, gt=0)  # TrackTable re-reads known tracks after this
    track_miss_ttl_s: float = Field(1.0, ge=0)  # an id the store does not know is not re-read for this long
    # The embedder's address as the page's browser reaches it (uploads, audio, events go there directly, by
    # CORS); empty: the page's own host on port 8002.
    embedder_public_url: str = ""
    # How far a new track's score follows this listener's place among the bundle's reference panel (1) rather
    # than how good a cold match it is overall (0); unset: the bundle's own (encore/cold_calibration.py).
    cold_panel_weight: float | None = Field(None, ge=0, le=1)
    expected_spec_hash: str = ""  # when set, bundles built for another feature spec are refused

    @model_validator(mode="after")
    def _k_fits(self) -> RankerSettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k={self.default_k} is larger than max_k={self.max_k}")
        return self
