"""Ephemeral Redis (standalone, cluster, Sentinel group), PostgreSQL, PgBouncer and
Prometheus servers for tests.

Every server listens on 127.0.0.1 on a free port, keeps its files in a fresh temp
directory (``thorbis-*``) and is a direct child of this process. Nothing here uses or
touches a service on the default ports 6379/5432.

Cleanup does not depend on the caller being tidy:

* each child runs in its own process group (``start_new_session``), so ``stop``/``kill``
  reach every process it forked;
* each child gets ``PR_SET_PDEATHSIG=SIGKILL``, so it dies with this process even after
  ``kill -9``;
* an ``atexit`` handler stops every live server, and a server object that is garbage
  collected while running is killed and its directory removed;
* ``stop()`` removes the temp directory and is idempotent.

Temp directories go to ``$THORBIS_TMPDIR`` when set, else to ``/dev/shm`` when it is a
roomy tmpfs (PostgreSQL's initdb and CREATE DATABASE are several times faster in memory),
else to :func:`tempfile.gettempdir`.

This package only starts and stops servers; it holds no cache logic and does not need
pytest (see :mod:`thorbis_cache.testing.pytest_plugin` for fixtures).
"""

from __future__ import annotations

from thorbis_cache.testing.servers._base import stop_all_servers
from thorbis_cache.testing.servers._ports import HOST, free_cluster_port, free_port
from thorbis_cache.testing.servers.pgbouncer import PgBouncer
from thorbis_cache.testing.servers.postgres_server import PostgresServer
from thorbis_cache.testing.servers.prometheus import PrometheusServer
from thorbis_cache.testing.servers.redis_cluster import CLUSTER_SLOTS, RedisCluster
from thorbis_cache.testing.servers.redis_sentinel import RedisSentinelGroup
from thorbis_cache.testing.servers.redis_server import RedisServer

__all__ = [
    "CLUSTER_SLOTS",
    "HOST",
    "PgBouncer",
    "PostgresServer",
    "PrometheusServer",
    "RedisCluster",
    "RedisSentinelGroup",
    "RedisServer",
    "free_cluster_port",
    "free_port",
    "stop_all_servers",
]
