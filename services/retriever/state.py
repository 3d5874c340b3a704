"""The retriever's state without its HTTP app: the search set up from the settings, the bundle CURRENT names, and
the pick-up of tracks pushed to the store since the bundle was built.

Two callers start it here, so the retriever's start-up lives in one place: the retriever app
(services/retriever/main.py) and the ranker's in-process retrieval (`ENCORE_RANKER_RETRIEVAL=inprocess`,
`RetrieveInProcess` in services/ranker/pipeline.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from threadpoolctl import threadpool_limits

from encore.artifacts import Bundle, current_bundle_path
from encore.settings import RetrieverSettings
from encore.store import Store
from services.retriever.search import Retriever, SearchOptions

log = logging.getLogger(__name__)
BUNDLE_POLL_S = 0.5  # how often the pick-up looks for its first bundle


def search_options(settings: RetrieverSettings) -> SearchOptions:
    return SearchOptions(
        index=settings.retriever_index,
        ivf_min_items=settings.retriever_ivf_min_items,
        ivf_nlist=settings.retriever_ivf_nlist,
        ivf_nprobe=settings.retriever_ivf_nprobe,
        ivf_target_recall=settings.retriever_ivf_target_recall,
        model=settings.retriever_model,
        cold_share=settings.retriever_cold_share,
        foldin_prior=settings.retriever_foldin_prior,
    )


@contextmanager
def search_threads(settings: RetrieverSettings) -> Iterator[None]:
    """BLAS (and faiss) threads of the search while the context is open: one query at a time, more threads only
    spin (the note above ENCORE_RETRIEVER_BLAS_THREADS in encore/settings.py)."""
    blas = threadpool_limits(limits=settings.retriever_blas_threads, user_api="blas")
    if settings.retriever_index != "exact":
        import faiss

        faiss.omp_set_num_threads(settings.retriever_blas_threads)
    try:
        yield
    finally:
        blas.restore_original_limits()


def load_current(retriever: Retriever, artifacts_dir: Path) -> Bundle:
    """Verify and swap in the bundle `artifacts_dir/CURRENT` names; BundleError keeps the old one (or none)."""
    bundle = retriever.reload(current_bundle_path(artifacts_dir))
    log.info("retriever serving bundle %s", bundle.id)
    return bundle


async def pick_up_loop(
    retriever: Retriever, store: Store, interval_s: float, on_added: Callable[[int], None] = lambda n: None
) -> None:
    """Make tracks pushed to the store since the bundle was built retrievable: once a bundle is loaded, then every
    `interval_s` (0: that once). `on_added(n)` hears of each batch picked up (the retriever app counts them).

    It waits for the first bundle because the ranker's in-process retriever gets its bundle after this starts
    (with the ranker's), and a retriever whose start-up bundle was refused gets one by a reload."""
    while not retriever.loaded:
        await asyncio.sleep(BUNDLE_POLL_S)
    while True:
        try:
            added = await asyncio.to_thread(retriever.pick_up, store)
            if added:
                log.info("picked up %d new tracks from the store", added)
                on_added(added)
        except Exception:  # the store may be down for a while; keep serving and try again later
            log.exception("pick-up of new tracks from the store failed")
        if interval_s <= 0:
            return
        await asyncio.sleep(interval_s)
