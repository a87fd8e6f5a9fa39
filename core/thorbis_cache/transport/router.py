"""Which server a hot command goes to, on every topology, with redis-py as the map.

The multiplexed transport sends only the hot commands (GET, MGET, SET, EVALSHA/EVAL of
one slot). Everything that needs topology knowledge stays with the redis-py client the
store already holds, and this router reads from it: a Cluster's slot map
(``nodes_manager``), a Sentinel group's current master (``get_master_address``), a
single server's address, credentials and TLS settings. When a reply says the map is out
of date (MOVED, ASK, READONLY) or a connection fails, the store sends that one call
through redis-py, which follows the redirect, refreshes its map or rediscovers the
master; the next call routes by the refreshed map.
"""

from __future__ import annotations

import ssl
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import RedisSSLContext, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.crc import key_slot

from thorbis_cache.transport.node import ConnectOptions, NodeConnections

__all__ = ["Router", "connect_options"]

_SSL_FIELDS = ("keyfile", "certfile", "cert_reqs", "include_verify_flags",
               "exclude_verify_flags", "ca_certs", "ca_data", "ca_path", "check_hostname",
               "min_version", "ciphers", "password")


def _ssl_context(kwargs: dict[str, Any]) -> ssl.SSLContext:
    # redis-py's own context builder, fed the client's own ssl_* settings: the fast
    # transport verifies exactly what redis-py would.
    fields = {f: kwargs[f"ssl_{f}"] for f in _SSL_FIELDS if f"ssl_{f}" in kwargs}
    fields.setdefault("cert_reqs", "required")
    fields.setdefault("check_hostname", True)
    context: ssl.SSLContext = RedisSSLContext(**fields).get()
    return context


def connect_options(client: aioredis.Redis | RedisCluster, connect_timeout: float
                    ) -> ConnectOptions:
    """Credentials, database, TLS and socket path of a redis-py client's connections."""
    if isinstance(client, RedisCluster):
        kwargs = dict(client.connection_kwargs)
        connection_class = kwargs.get("connection_class")
    else:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        connection_class = pool.connection_class
    tls = isinstance(connection_class, type) and issubclass(connection_class, SSLConnection)
    unix = isinstance(connection_class, type) and issubclass(
        connection_class, UnixDomainSocketConnection)
    return ConnectOptions(
        username=kwargs.get("username"), password=kwargs.get("password"),
        db=int(kwargs.get("db") or 0),
        ssl_context=_ssl_context(kwargs) if tls else None,
        connect_timeout=float(kwargs.get("socket_connect_timeout") or connect_timeout),
        unix_path=str(kwargs["path"]) if unix else None,
    )


class Router:
    """Routes a hot command to the :class:`NodeConnections` of the server that holds
    its key; see the module docstring.

    :param client: the store's redis-py client (the map).
    :param connections: multiplexed connections per server.
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, *, connections: int = 2,
                 connect_timeout: float = 2.0) -> None:
        self._client = client
        self._size = connections
        self._options = connect_options(client, connect_timeout)
        self._nodes: dict[tuple[str, int], NodeConnections] = {}
        self._cluster = client if isinstance(client, RedisCluster) else None
        pool = None if isinstance(client, RedisCluster) else client.connection_pool
        self._sentinel = pool if isinstance(pool, SentinelConnectionPool) else None
        # The one server of a standalone client (None: a map to consult).
        self._single: NodeConnections | None = None
        if self._cluster is None and self._sentinel is None:
            assert pool is not None
            self._single = self._node(str(pool.connection_kwargs.get("host", "localhost")),
                                      int(pool.connection_kwargs.get("port", 6379)))
        self._master: NodeConnections | None = None

    def _node(self, host: str, port: int) -> NodeConnections:
        node = self._nodes.get((host, port))
        if node is None:
            node = self._nodes[(host, port)] = NodeConnections(host, port, self._options,
                                                               self._size)
        return node

    def for_key(self, key: str) -> NodeConnections | None:
        """The server holding ``key`` as the map knows it now; None when the map must be
        consulted over the network first (see :meth:`resolve`)."""
        if self._single is not None:
            return self._single
        if self._cluster is not None:
            node = self._cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
            return self._node(str(node.host), int(node.port))
        return self._master

    async def resolve(self, key: str) -> NodeConnections:
        """:meth:`for_key`, asking the sentinels for the master when not known."""
        node = self.for_key(key)
        if node is not None:
            return node
        assert self._sentinel is not None
        host, port = await self._sentinel.get_master_address()  # type: ignore[no-untyped-call]
        self._master = self._node(str(host), int(port))
        return self._master

    def stale(self, node: NodeConnections) -> None:
        """A reply or a failure said ``node`` may no longer be the right server: close
        its connections, and under Sentinel ask for the master again next time."""
        node.close()
        if node is self._master:
            self._master = None

    async def aclose(self) -> None:
        """Close every multiplexed connection and wait for the sockets to be closed
        (connections of a loop that has stopped are shut down, without waiting)."""
        closed = [c for node in self._nodes.values() for c in node.close()]
        self._master = None
        for connection in closed:
            await connection.wait_closed()
