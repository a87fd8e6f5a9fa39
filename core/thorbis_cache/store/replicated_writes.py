"""Writes that wait for the replicas, and what tells a failover: the part of
:class:`~thorbis_cache.store.redis_store.RedisStore` that knows the masters.

``replicated`` and ``replicated_each`` send writes of one slot on one connection to its
master followed by ``WAIT`` (:mod:`~thorbis_cache.store.replica_waits` knows the
topology); ``sync_replicas`` waits for what a master executed so far; ``cluster_slots``
and ``master_run_ids`` read the masters a failover replaces. Each runs under the
store's deadline, breakers and error translation (its ``_call``), which this mixin
reaches through :class:`_Store`, the store as it sees it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import get_node_name

from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.store.circuit import Breakers
from thorbis_cache.store.replica_waits import ReplicaWaits

__all__ = ["ReplicatedWrites"]


class _Store(Protocol):
    """What these methods use of the store they are mixed into."""

    _client: aioredis.Redis | RedisCluster
    _cluster: bool
    _waits: ReplicaWaits
    breakers: Breakers
    address: str
    wait_timeout: float
    wait_replicas: int | None
    replication_timeouts: int

    def _call(self, operation: str, route: str | None = None
              ) -> AbstractAsyncContextManager[None]: ...

    def _route_of(self, keys: Sequence[str]) -> str | None: ...

    async def replicated(self, routing_key: str, commands: Sequence[tuple[Any, ...]], *,
                         only_with_replicas: bool = False) -> tuple[list[Any], int, int]: ...

    async def replicated_each(self, calls: Sequence[tuple[str, tuple[Any, ...]]], *,
                              only_with_replicas: bool = False) -> list[Any]: ...

    async def cluster_slots(self) -> dict[tuple[int, int], dict[str, Any]]: ...


class ReplicatedWrites:
    """The store's writes that wait for replicas, and its reads of the masters (mixed
    into :class:`~thorbis_cache.store.redis_store.RedisStore`)."""

    async def replicated(self: _Store, routing_key: str, commands: Sequence[tuple[Any, ...]],
                         *, only_with_replicas: bool = False) -> tuple[list[Any], int, int]:
        """Run ``commands`` (writes of ``routing_key``'s slot; at least one, so that the
        connection has a write to wait for) on one connection to the master serving that
        slot, followed by ``WAIT``, so that they -- and every write that master executed
        before them, from any connection -- reach its replicas before this returns.

        Replication is asynchronous: a write acknowledged by a master that dies before
        its replicas got it is lost by the failover. Invalidations wait here so that a
        deleted value is not resurrected by a promotion (within :attr:`wait_timeout`;
        see :mod:`thorbis_cache.invalidation.replay` for what closes the rest).

        :param only_with_replicas: send nothing at all when the master has no replica
            (the commands are only there to be waited for).
        :returns: the commands' replies, the replicas that acknowledged, and the
            replicas waited for (0 when the master has none: no WAIT is sent).
        """
        async with self._call("WAIT", routing_key):
            replies, acked, wanted = await self._waits.run(
                routing_key, commands, only_with_replicas=only_with_replicas,
                wait_seconds=self.wait_timeout, at_most=self.wait_replicas)
        if acked < wanted:
            self.replication_timeouts += 1
        return replies, acked, wanted

    async def replicated_each(self: _Store, calls: Sequence[tuple[str, tuple[Any, ...]]], *,
                              only_with_replicas: bool = False) -> list[Any]:
        """:meth:`replicated` for many keys at once: each ``(routing_key, command)`` runs
        on the master serving its key, the commands for one master on one connection
        followed by one ``WAIT`` (a master's replication stream is in order, so one
        acknowledgement covers them all), the masters in parallel. A slot that moved
        under a failover or a resharding fails the call (as :meth:`replicated` does
        after one remap); the next call groups by the new map.

        :param only_with_replicas: see :meth:`replicated` (a master without replicas
            runs nothing, and its commands' replies are None).
        :returns: the commands' replies, in the order of ``calls``.
        """
        groups: dict[str, list[int]] = {}
        route = self._route_of([key for key, _ in calls]) if calls else None
        async with self._call("WAIT", route):  # on a Cluster, maps first: the grouping reads it
            for i, (key, _) in enumerate(calls):
                groups.setdefault(self._waits.master_of(key), []).append(i)
            outcomes = await asyncio.gather(*(
                self._waits.run(calls[positions[0]][0], [calls[i][1] for i in positions],
                                only_with_replicas=only_with_replicas,
                                wait_seconds=self.wait_timeout, at_most=self.wait_replicas)
                for positions in groups.values()))
        replies: list[Any] = [None] * len(calls)
        for positions, (got, acked, wanted) in zip(groups.values(), outcomes, strict=True):
            if acked < wanted:
                self.replication_timeouts += 1
            if got:  # empty when a master without replicas was sent nothing
                for i, reply in zip(positions, got, strict=True):
                    replies[i] = reply
        return replies

    async def sync_replicas(self: _Store, routing_key: str) -> tuple[int, int]:
        """Wait until the writes its master executed so far reach the replicas of
        ``routing_key``'s master (a marker ``SET`` under the key, expiring after a second,
        is what the connection waits for). No round trip when the master has no replica.

        :returns: the replicas that acknowledged and the replicas waited for.
        """
        if not self._cluster and self._waits.known_without_replicas():
            return 0, 0  # the common case without replicas: no call at all
        _, acked, wanted = await self.replicated(
            routing_key, [("SET", routing_key, b"", "PX", 1000)], only_with_replicas=True)
        return acked, wanted

    async def sync_replicas_each(self: _Store, routing_keys: Sequence[str]) -> None:
        """:meth:`sync_replicas` for several keys (an invalidation's tenants): a marker
        under each, one ``WAIT`` per master, the masters in parallel."""
        if not routing_keys or (not self._cluster and self._waits.known_without_replicas()):
            return
        await self.replicated_each([(key, ("SET", key, b"", "PX", 1000))
                                    for key in routing_keys], only_with_replicas=True)

    async def cluster_slots(self: _Store) -> dict[tuple[int, int], dict[str, Any]]:
        """``CLUSTER SLOTS`` of a random master (Cluster only), as redis-py parses it:
        ``{(first, last): {"primary": (host, port), "replicas": [(host, port)...]}}``.
        Redis lists a replica only once it has replicated a write. (A master, not any
        node: a replica that hangs -- paused, resyncing -- must not stall the caller;
        a dead master in the client's map fails fast and the caller retries.)"""
        async with self._call("CLUSTER SLOTS"):
            client = self._client
            assert isinstance(client, RedisCluster)
            primaries = client.get_primaries()
            # Not a master whose breaker opened: it would hold the call to its deadline.
            node = random.choice([p for p in primaries if not self.breakers.suspect(
                str(p.name))] or primaries)
            reply: dict[tuple[int, int], dict[str, Any]] = await client.execute_command(
                "CLUSTER SLOTS", target_nodes=node)
            return reply

    async def master_run_ids(self: _Store) -> frozenset[str]:
        """The ``run_id`` of every master: a new one means a failover or a restart, after
        which writes acknowledged by the old master may be missing. On a Cluster the
        masters are read from ``CLUSTER SLOTS`` (the client's own map may still name a
        master that died) and asked one by one."""
        if not isinstance(self._client, RedisCluster):
            async with self._call("INFO server"):
                return frozenset([str((await self._client.info("server")).get("run_id"))])
        slots = await self.cluster_slots()
        masters = sorted({tuple(nodes["primary"]) for nodes in slots.values()})
        for host, port in masters:
            if self.breakers.suspect(get_node_name(host, port)):
                raise RedisUnavailableError("INFO server", self.address,
                                            f"circuit open on master {host}:{port}")
        ids = []
        async with self._call("INFO server"):
            for host, port in masters:
                client = self._waits.node_client(str(host), int(port))
                ids.append(str((await client.info("server")).get("run_id")))
        return frozenset(ids)
