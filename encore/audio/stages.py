"""Where an encode's time goes (resample, mel, network), for a caller that asks, in its own thread.

The embedder runs one upload per worker thread; `collect()` around an encode gathers the milliseconds each
`stage(name)` block inside it took, without passing a timer through every encoder's signature. Outside
`collect()` a stage costs one attribute lookup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def collect() -> Iterator[dict[str, float]]:
    """Yield a dict that fills with {stage: milliseconds} for the stages run in this thread meanwhile."""
    spent: dict[str, float] = {}
    outer = getattr(_local, "spent", None)
    _local.spent = spent
    try:
        yield spent
    finally:
        _local.spent = outer


@contextmanager
def stage(name: str) -> Iterator[None]:
    spent = getattr(_local, "spent", None)
    if spent is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        spent[name] = spent.get(name, 0.0) + (time.perf_counter() - start) * 1000
