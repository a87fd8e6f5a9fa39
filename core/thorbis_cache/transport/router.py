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

import asyncio
import contextlib
import inspect
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import RedisSSLContext, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.cluster import get_node_name
from redis.crc import key_slot

from thorbis_cache.transport.node import ConnectOptions, NodeConnections

__all__ = ["Router", "connect_options"]

log = logging.getLogger(__name__)

#: seconds between two warnings about one silent server (each detection is counted)
_WARN_EVERY = 30.0
#: Seconds between two refreshes of a Cluster's slot map asked by timeouts, at least.
REMAP_EVERY = 1.0

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
        #: servers found silent (replies owed, nothing read for a call's timeout): each
        #: time, their connections were closed and the topology asked for again
        self.silent_found = 0
        self._warned: dict[tuple[str, int], float] = {}
        self._swept_at: float | None = None
        self._remap: asyncio.Task[None] | None = None
        self._remapped_at = float("-inf")
        #: told ``(host, port)`` of each server given up (the store opens its breaker)
        self.on_silent: Callable[[str, int], None] | None = None

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

    def sweep(self, now: float, silence: float) -> None:
        """Give up the servers that have owed replies for ``silence`` seconds without
        sending a byte; called at every tick of the store's deadline watchdog.

        The kernel reports a connection lost when its peer closes it, not when the
        peer stops answering: a hung or stopped process, a host gone behind a
        partition, a middlebox that dropped the flow leave it open for many minutes,
        and every call routed there would time out until then, long after Sentinel or
        the Cluster promoted a replica. Such a server's connections are closed (the
        calls still waiting fail over to redis-py, as for a lost connection), the
        sentinels are asked for the master again at the next call, and a Cluster's
        slot map is refreshed from the other nodes. Ticks that stopped for a while
        (the loop blocked, or no tick yet) only start the counts again.
        """
        previous, self._swept_at = self._swept_at, now
        if previous is None or now - previous > silence / 2:
            for node in self._nodes.values():
                node.silent(now, None)
            return
        for node in list(self._nodes.values()):
            if node.silent(now, silence):
                self._given_up(node, silence)

    def _given_up(self, node: NodeConnections, silence: float) -> None:
        self.silent_found += 1
        where = (node.host, node.port)
        now = time.monotonic()
        if now - self._warned.get(where, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned[where] = now
            log.warning(
                "redis %s:%s owed replies for over %gs without sending a byte: its "
                "connections are closed and %s", node.host, node.port, silence,
                "the cluster's slot map is asked for again" if self._cluster is not None
                else "the sentinels are asked for the master again"
                if self._sentinel is not None else "opened again at the next call")
        self.stale(node)
        if self.on_silent is not None:
            self.on_silent(node.host, node.port)
        self.remap(get_node_name(node.host, node.port), now)

    def remap(self, failed: str, now: float) -> None:
        """On a Cluster, refresh the slot map from the other nodes, ``failed`` (a node's
        name) asked last: that node was found silent, or a call routed to it timed out.
        A timeout through redis-py tells the driver nothing (the call is cancelled
        before any error), and a call to a master the Cluster has replaced meanwhile
        would go there again and again. One refresh at a time, at most one a second."""
        if self._cluster is None or (self._remap is not None and not self._remap.done()):
            return
        if now - self._remapped_at < REMAP_EVERY:
            return
        self._remapped_at = now
        self._remap = asyncio.get_running_loop().create_task(
            self._refresh_slot_map(self._cluster, failed))

    async def _refresh_slot_map(self, cluster: RedisCluster, failed: str) -> None:
        """Ask the other nodes for the slot map, ``failed`` last (a silent node would
        hold the refresh until its bound), within the connect timeout twice over (the
        next tick, or the next timeout, asks again)."""
        manager = cluster.nodes_manager
        options: dict[str, Any] = {}
        if "last_failed_node_name" in inspect.signature(manager.initialize).parameters:
            options["last_failed_node_name"] = failed
        try:
            async with asyncio.timeout(2 * self._options.connect_timeout):
                await manager.initialize(**options)
        except Exception as exc:  # the next silent tick asks again
            log.info("the cluster's slot map could not be refreshed after %s stopped "
                     "answering: %r", failed, exc)

    async def aclose(self) -> None:
        """Close every multiplexed connection and wait for the sockets to be closed
        (connections of a loop that has stopped are shut down, without waiting)."""
        remap, self._remap = self._remap, None
        if remap is not None and not remap.done() and remap.get_loop().is_running():
            remap.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                if remap.get_loop() is asyncio.get_running_loop():
                    await remap
        self._swept_at = None
        closed = [c for node in self._nodes.values() for c in node.close()]
        self._master = None
        for connection in closed:
            await connection.wait_closed()
