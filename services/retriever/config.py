"""Retriever settings: ENCORE_* environment variables on top of the shared service settings."""

from functools import lru_cache

from pydantic import Field

from services.common.settings import ServiceSettings


class RetrieverSettings(ServiceSettings):
    retriever_port: int = 8001  # used by `python -m services.retriever.main`; uvicorn's --port wins otherwise
    retriever_default_k: int = Field(default=100, ge=1)  # candidates when a request gives no k
    retriever_max_k: int = Field(default=1000, ge=1)  # a larger k is refused with 422
    # Seconds between pick-ups of tracks pushed to the store since the bundle was built; 0: at start only.
    retriever_refresh_s: float = Field(default=60.0, ge=0)
    # BLAS threads for the scoring matmul: one (10k x 65) matrix-vector product takes ~0.2 ms on one thread
    # but ~12 ms p50 with OpenBLAS's default threads on two busy cores (threads spin against each other).
    retriever_blas_threads: int = Field(default=1, ge=1)


@lru_cache(maxsize=1)
def get_settings() -> RetrieverSettings:
    return RetrieverSettings()
