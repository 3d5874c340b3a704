"""Retriever settings: ENCORE_* environment variables on top of the shared service settings."""

from functools import lru_cache
from typing import Literal

from pydantic import Field

from services.common.patterns import MAX_ABS_CONTENT
from services.common.settings import ServiceSettings
from services.retriever.search import SearchOptions


class RetrieverSettings(ServiceSettings):
    retriever_port: int = 8001  # used by `python -m services.retriever.main`; uvicorn's --port wins otherwise
    retriever_default_k: int = Field(default=100, ge=1)  # candidates when a request gives no k
    retriever_max_k: int = Field(default=1000, ge=1)  # a larger k is refused with 422
    # Seconds between pick-ups of tracks pushed to the store since the bundle was built; 0: at start only.
    retriever_refresh_s: float = Field(default=60.0, ge=0)
    # BLAS threads for the scoring matmul: one (10k x 65) matrix-vector product takes ~0.2 ms on one thread
    # but ~12 ms p50 with OpenBLAS's default threads on two busy cores (threads spin against each other).
    retriever_blas_threads: int = Field(default=1, ge=1)
    # Top-k search over trained items: exact (numpy, every item scored), ivf (faiss IVF-flat, approximate), or
    # auto (ivf from retriever_ivf_min_items items on). Numbers behind the defaults: docs/performance.md.
    retriever_index: Literal["exact", "ivf", "auto"] = "auto"
    retriever_ivf_min_items: int = Field(default=1_000_000, ge=1)
    retriever_ivf_nlist: int = Field(default=0, ge=0)  # IVF cells; 0: 4 * sqrt(n_items)
    retriever_ivf_nprobe: int = Field(default=32, ge=1)  # cells searched per query (the starting point)
    # At load, nprobe doubles until sampled users' recall@200 against exact search reaches this (0: no check).
    retriever_ivf_target_recall: float = Field(default=0.95, ge=0, le=1)
    # POST /items refuses a content value with |x| above this (the bounded content transform keeps real ones inside).
    retriever_max_abs_content: float = Field(default=MAX_ABS_CONTENT, gt=0)
    # Refuse bundles whose retriever is another model (BPR, VBPR, FREEDOM, LGMRec); empty: serve any.
    retriever_model: str = ""
    # At least this share of a known user's candidates are tracks added since the bundle (their best-matching
    # ones), so new tracks reach the ranker, which judges them; 0: new tracks compete on raw scores alone.
    retriever_cold_share: float = Field(default=0.3, ge=0, le=1)

    def search_options(self) -> SearchOptions:
        return SearchOptions(
            index=self.retriever_index,
            ivf_min_items=self.retriever_ivf_min_items,
            ivf_nlist=self.retriever_ivf_nlist,
            ivf_nprobe=self.retriever_ivf_nprobe,
            ivf_target_recall=self.retriever_ivf_target_recall,
            model=self.retriever_model,
            cold_share=self.retriever_cold_share,
        )


@lru_cache(maxsize=1)
def get_settings() -> RetrieverSettings:
    return RetrieverSettings()
