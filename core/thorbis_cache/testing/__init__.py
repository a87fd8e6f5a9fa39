"""Test kit: ephemeral Redis and PostgreSQL servers, and the pytest fixtures built on them.

:mod:`~thorbis_cache.testing.servers` starts real servers on free loopback ports in temp
directories (no pytest needed); :mod:`~thorbis_cache.testing.binaries` locates or installs
the server binaries; :mod:`~thorbis_cache.testing.pytest_plugin` provides the
``thorbis_*`` fixtures and is loaded automatically by pytest.
"""

from __future__ import annotations

from thorbis_cache.testing.servers import (
    PostgresServer,
    RedisCluster,
    RedisServer,
    free_cluster_port,
    free_port,
    stop_all_servers,
)

__all__ = [
    "PostgresServer",
    "RedisCluster",
    "RedisServer",
    "free_cluster_port",
    "free_port",
    "stop_all_servers",
]
