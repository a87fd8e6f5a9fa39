"""Plain redis-py clients to the masters behind a URL of any topology, for tests that
look at what the cache did on the server (key counts, command statistics)."""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster as SyncCluster
from redis.sentinel import Sentinel

from thorbis_cache.store.redis_url import Topology, parse_redis_url

__all__ = ["master_clients"]


def master_clients(url: str) -> list[redis.Redis]:
    """One sync client per master: the server of ``redis://``, every primary of a
    Cluster, the current master of a Sentinel group. Close them after use."""
    address = parse_redis_url(url)
    auth: dict[str, Any] = {"username": address.username, "password": address.password}
    if address.topology is Topology.CLUSTER:
        host, port = address.nodes[0]
        cluster = SyncCluster(host=host, port=port, **auth)
        try:
            return [redis.Redis(host=n.host, port=n.port, **auth)
                    for n in cluster.get_primaries()]  # type: ignore[no-untyped-call]
        finally:
            cluster.close()
    if address.topology is Topology.SENTINEL:
        sentinel = Sentinel(list(address.nodes))  # type: ignore[no-untyped-call, unused-ignore]
        try:
            host, port = sentinel.discover_master(address.service)  # type: ignore[no-untyped-call, unused-ignore]
        finally:
            for client in sentinel.sentinels:
                client.close()
        return [redis.Redis(host=host, port=port, db=address.db, **auth)]
    host, port = address.nodes[0]
    return [redis.Redis(host=host, port=port, db=address.db, **auth)]
