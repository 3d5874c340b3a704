"""Machine facts for run manifests: library versions and CPU steal time (this VM loses CPU to its host)."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path

_PROC_STAT = Path("/proc/stat")


@dataclass
class CpuTimes:
    """Aggregate CPU jiffies from /proc/stat; zeros where it does not exist."""

    total: int
    steal: int

    @classmethod
    def now(cls) -> CpuTimes:
        try:
            fields = [int(x) for x in _PROC_STAT.read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return cls(0, 0)
        steal = fields[7] if len(fields) > 7 else 0
        return cls(sum(fields[:8]), steal)

    def steal_pct_since(self) -> float:
        """Share of CPU time the hypervisor took since this reading, in percent."""
        later = CpuTimes.now()
        total = later.total - self.total
        return 100.0 * (later.steal - self.steal) / total if total > 0 else 0.0


def library_versions(names: tuple[str, ...] = ("torch", "numpy", "pandas", "scikit-learn", "onnxruntime")) -> dict:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
