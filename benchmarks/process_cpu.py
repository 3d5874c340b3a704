"""CPU time of a process tree (a uvicorn parent and its workers), read with psutil: what the benchmarks that run
services as processes charge to each service (events_ingest, recommend_profile, startup_memory)."""

from __future__ import annotations

import psutil


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process `pid` and its living descendants have used so far."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a worker that exited between the listing and the read
            continue
        total += times.user + times.system
    return total
