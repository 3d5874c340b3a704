"""A real Redis Cluster (3 masters + 3 replicas of local redis-server processes) for the store tests' third
backend, started once per session and stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_cluster import LocalCluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    reason = LocalCluster.available()
    if reason:
        pytest.skip(f"no Redis Cluster: {reason}")
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
