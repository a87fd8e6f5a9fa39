"""Writes that wait for the replicas: commands sent on one connection to the master of a
slot, followed by ``WAIT``, with the replica counts and per-node clients that needs.

:meth:`RedisStore.replicated <thorbis_cache.store.redis_store.RedisStore.replicated>`
runs them under its deadline, breaker and error translation; this module only knows the
topology: which master serves a key, how many replicas it has (``INFO replication``,
kept a second), and when the slot map must be learnt again (after a lost node, or a
``MOVED`` / ``READONLY`` reply: a failover).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from thorbis_cache.store.event_loops import release_connections

__all__ = ["ReplicaWaits"]

#: The single-node client's options taken from the Cluster client's connections.
_NODE_OPTIONS = ("username", "password", "socket_connect_timeout", "ssl", "ssl_ca_certs",
                 "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


class ReplicaWaits:
    """The masters of one store's client, as writes that wait for replicas see them.

    :param client: the store's redis-py client (single server, Sentinel master or
        Cluster).
    """

    def __init__(self, client: aioredis.Redis | RedisCluster) -> None:
        self._client = client
        # Replicas connected per master address ("master" off a Cluster), and until when
        # that count holds.
        self._replicas: dict[str, tuple[int, float]] = {}
        self._node_clients: dict[str, aioredis.Redis] = {}
        self._remap_needed = False

    async def run(self, routing_key: str, commands: Sequence[tuple[Any, ...]], *,
                  only_with_replicas: bool, wait_seconds: float, at_most: int | None
                  ) -> tuple[list[Any], int, int]:
        """``commands`` then ``WAIT`` on one connection to ``routing_key``'s master.

        :param wait_seconds: seconds the WAIT lasts at most.
        :param at_most: replicas waited for at most (None: every connected replica).
        :returns: the commands' replies, the replicas that acknowledged, and the
            replicas waited for (0 when the master has none: no WAIT is sent).
        :raises redis.exceptions.RedisError: as redis-py raises it (the store
            translates it).
        """
        for attempt in (1, 2):
            if self._remap_needed:
                await self._remap()
            client, where = self._master_client(routing_key)
            wanted = await self._replica_count(client, where, at_most)
            if not wanted and only_with_replicas:
                return [], 0, 0
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for command in commands:
                        pipe.execute_command(*command)
                    if wanted:
                        pipe.execute_command("WAIT", wanted, int(wait_seconds * 1000))
                    replies = await pipe.execute(raise_on_error=False)
            except (rexc.ConnectionError, rexc.TimeoutError, OSError):
                # The node is gone (a failover?): learn the map again next time.
                self._remap_needed = True
                raise
            moved = next((r for r in replies if isinstance(r, rexc.ResponseError)
                          and str(r).startswith(("MOVED", "READONLY"))), None)
            if moved is not None and attempt == 1:
                # The slot has a new master (a failover): learn the map again.
                await self._remap()
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            acked = int(replies.pop()) if wanted else 0
            return replies, acked, wanted
        raise AssertionError("unreachable")  # pragma: no cover

    def master_of(self, routing_key: str) -> str:
        """Which master serves ``routing_key`` by the client's map (``"master"`` off a
        Cluster; ``""`` while a failover leaves its slot without one): writes of keys
        with the same answer can share one connection and one ``WAIT``."""
        client = self._client
        if not isinstance(client, RedisCluster):
            return "master"
        try:
            node = client.get_node_from_key(routing_key)
        except rexc.SlotNotCoveredError:  # not mapped yet: the call maps it
            return ""
        return "" if node is None else f"{node.host}:{node.port}"

    def known_without_replicas(self) -> bool:
        """The single master is known, within the last second, to have no replica to
        wait for (so a write need not be followed by anything)."""
        known = self._replicas.get("master")
        return known is not None and not known[0] and known[1] > time.monotonic()

    def node_client(self, host: str, port: int) -> aioredis.Redis:
        """A single-node client to one Cluster node (kept per address), for what must
        run on one connection of one known node (WAIT after writes, INFO)."""
        where = f"{host}:{port}"
        node_client = self._node_clients.get(where)
        if node_client is None:
            assert isinstance(self._client, RedisCluster)
            kwargs: dict[str, Any] = {k: v for k, v in self._client.connection_kwargs.items()
                                      if k in _NODE_OPTIONS}
            node_client = aioredis.Redis(host=host, port=port, socket_keepalive=True,
                                         decode_responses=False, max_connections=16,
                                         retry=Retry(NoBackoff(), 0), **kwargs)
            self._node_clients[where] = node_client
        return node_client

    async def aclose(self) -> None:
        """Close the per-node clients (from the next loop too, once theirs has stopped:
        see :func:`~thorbis_cache.store.event_loops.release_connections`)."""
        clients, self._node_clients = self._node_clients, {}
        for node_client in clients.values():
            await release_connections(node_client)

    def _master_client(self, routing_key: str) -> tuple[aioredis.Redis, str]:
        client = self._client
        if not isinstance(client, RedisCluster):
            return client, "master"
        node = client.get_node_from_key(routing_key)
        if node is None:  # a failover in progress: the slot has no master for now
            raise rexc.ConnectionError(f"no master serves the slot of {routing_key!r}")
        where = f"{node.host}:{node.port}"
        return self.node_client(str(node.host), int(node.port)), where

    async def _remap(self) -> None:
        self._remap_needed = False
        client = self._client
        if isinstance(client, RedisCluster):
            await client.nodes_manager.initialize()
        self._replicas.clear()

    async def _replica_count(self, client: aioredis.Redis, where: str,
                             at_most: int | None) -> int:
        """The replicas connected to ``client``'s server, from INFO (kept 1 s: a new or
        lost replica changes how many a WAIT asks for within a second)."""
        now = time.monotonic()
        known = self._replicas.get(where)
        if known is not None and known[1] > now:
            return known[0]
        info = await client.info("replication")
        count = int(info.get("connected_slaves", 0))
        if at_most is not None:
            count = min(count, at_most)
        self._replicas[where] = (count, now + 1.0)
        return count
