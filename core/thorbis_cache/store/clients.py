"""The redis-py clients of a store: the one a URL names, on any topology, and a
dedicated single-node client for pub/sub. Retries are set here: a stopped server fails
a call at once instead of after redis-py's back-off (see :func:`fail_fast`).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from thorbis_cache.store.redis_url import RedisAddress, Topology

__all__ = ["client_for", "dedicated_client_for", "fail_fast"]


def client_for(url: str, address: RedisAddress, *, connect_timeout: float,
               max_connections: int) -> aioredis.Redis | RedisCluster:
    """The redis-py client of ``url`` (parsed as ``address``): bytes replies, no
    per-call socket timeout (the store bounds every call itself), keepalive, and a
    pool of ``max_connections``. Connects lazily."""
    common: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True,
        "max_connections": max_connections,
        "decode_responses": False,
    }
    client: aioredis.Redis | RedisCluster
    if address.topology is Topology.CLUSTER:
        client = RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in address.nodes],
            # Two immediate retries: each one refreshes the slot map (so a call
            # after a failover reaches the promoted replica), and a dead master
            # fails the call at once instead of after redis-py's jittered back-off
            # (redis-py 8.2's default held every call to a dead master until the
            # store's deadline, 2 s, before it degraded to its loader).
            retry=Retry(NoBackoff(), 2),
            **address.connection_options(), **common,
        )
    elif address.topology is Topology.SENTINEL:
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(address.nodes),
            sentinel_kwargs={
                "socket_timeout": connect_timeout,
                "socket_connect_timeout": connect_timeout,
                "username": address.sentinel_options.get("sentinel_username"),
                "password": address.sentinel_options.get("sentinel_password"),
            },
        )
        client = sentinel.master_for(
            address.service, db=address.db, **address.connection_options(), **common)
    elif url.startswith("unix://"):
        client = aioredis.Redis.from_url(url, **common)
    else:
        (host, port), = address.nodes
        client = aioredis.Redis(host=host, port=port, db=address.db,
                                **address.connection_options(), **common)
    if not isinstance(client, RedisCluster):
        fail_fast(client)
    return client


def dedicated_client_for(client: Any, address: RedisAddress | None) -> aioredis.Redis:
    """A new single-node client (for pub/sub) to the server ``client`` talks to -- the
    first startup node of a Cluster, where PUBLISH reaches every node; the current
    master of a Sentinel group -- with the driver's silent retries off, so its owner
    notices a lost connection.

    :param address: the store's parsed URL, whose credentials and TLS it uses.
    """
    options: dict[str, Any] = {
        "socket_keepalive": True, "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
    }
    if address is not None:
        options.update(address.connection_options())
    if isinstance(client, RedisCluster):
        node = next(iter(client.nodes_manager.startup_nodes.values()))
        kwargs: dict[str, Any] = dict(client.connection_kwargs)
        host, port = str(node.host), int(node.port)
    else:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        if isinstance(pool, SentinelConnectionPool):
            return pool.sentinel_manager.master_for(  # type: ignore[no-any-return]
                pool.service_name, db=kwargs.get("db", 0),
                socket_connect_timeout=kwargs.get("socket_connect_timeout") or 2.0,
                **options)
        host, port = str(kwargs.pop("host", "127.0.0.1")), int(kwargs.pop("port", 6379))
    options.setdefault("username", kwargs.get("username"))
    options.setdefault("password", kwargs.get("password"))
    return aioredis.Redis(
        host=host, port=port, db=kwargs.get("db", 0),
        socket_connect_timeout=kwargs.get("socket_connect_timeout") or 2.0, **options,
    )


def fail_fast(client: aioredis.Redis) -> None:
    """One immediate retry for the calls of a single-node client, instead of redis-py's
    default (10 attempts, a jittered back-off growing to 1 s between them).

    With the default, a call to a stopped server is retried until the store's deadline
    cancels it (2 s): every reader waits that long before degrading to its loader, the
    breaker needs 3 such calls to open, and a call in flight when the server comes back
    answers only after its current back-off sleep (up to 1 s later). One retry still
    replaces a pooled connection that died with a restarted server; a refused
    connection fails the call at once. (A Cluster client keeps its own policy: its
    retries also refresh the slot map after a failover.)
    """
    client.set_retry(Retry(NoBackoff(), 1))
