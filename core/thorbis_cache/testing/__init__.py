"""Test kit: ephemeral Redis and PostgreSQL servers, and the pytest fixtures built on them.

:mod:`~thorbis_cache.testing.servers` starts real servers on free loopback ports in temp
directories (no pytest needed); :mod:`~thorbis_cache.testing.binaries` locates or installs
the server binaries; :mod:`~thorbis_cache.testing.pytest_plugin` provides the
``thorbis_*`` fixtures and is loaded automatically by pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thorbis_cache.testing.servers import (
        PostgresServer,
        RedisCluster,
        RedisSentinelGroup,
        RedisServer,
        free_cluster_port,
        free_port,
        stop_all_servers,
    )

__all__ = [
    "PostgresServer",
    "RedisCluster",
    "RedisSentinelGroup",
    "RedisServer",
    "free_cluster_port",
    "free_port",
    "stop_all_servers",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m thorbis_cache.testing.binaries` and users of other
    # submodules do not import the server launchers (and runpy does not warn).
    if name in __all__:
        return getattr(importlib.import_module("thorbis_cache.testing.servers"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
