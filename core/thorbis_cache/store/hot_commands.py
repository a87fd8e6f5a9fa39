"""How a hot command reaches its server: over the multiplexed transport
(:mod:`thorbis_cache.transport`), or through redis-py when the transport cannot carry it
(a redirect, a lost connection, a server not mapped yet), counted as a handover.

:class:`~thorbis_cache.store.redis_store.RedisStore` wraps these sends in its deadline,
in-flight gate, breaker and error translation; nothing here catches what redis-py
raises in the end.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from thorbis_cache.transport import NodeConnections, Router, pack_command

__all__ = ["HotCommands"]

#: Replies that say redis-py's slot map is behind: its own call follows the redirect;
#: and TRYAGAIN, a command naming keys of a slot being moved (resharding) that are split
#: between its two nodes for now: redis-py follows the migration and tries again.
_REDIRECTS = (rexc.MovedError, rexc.AskError, rexc.SlotNotCoveredError,
              rexc.TryAgainError)
#: A connection lost or refused, or a demoted master: redis-py reconnects or rediscovers.
_LOST = (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError, OSError)


class HotCommands:
    """The hot commands' way to the servers of one store.

    :param client: the store's redis-py client (the fallback, and the topology).
    :param router: the multiplexed connections, routed by ``client``'s topology; None
        sends everything through redis-py.
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, router: Router | None) -> None:
        self.client = client
        self.router = router
        #: commands handed to redis-py, by reason: ``redirect`` (MOVED, ASK, a slot not
        #: yet mapped) and ``connection`` (a lost or refused connection, a demoted
        #: master). Near zero in a steady state.
        self.handovers: dict[str, int] = {"redirect": 0, "connection": 0}
        #: calls waiting for a slot being moved to settle (TRYAGAIN): when one's deadline
        #: expires, the server was there all along (the store's breaker is not told)
        self.migrating: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    async def send(self, key: str, args: tuple[Any, ...]) -> Any:
        """One hot command, over the multiplexed transport when it can carry it.

        A redirect (MOVED, ASK), a demoted master (READONLY) or a lost connection sends
        that call through redis-py instead, which follows the redirect, refreshes the
        slot map or rediscovers the master, and retries as it always has; the next call
        routes by the refreshed map. Scripts without keys and a Sentinel master not yet
        known go to redis-py too (the latter only until the first answer).
        """
        router = self.router
        if router is None or not key:
            return await self.through_redis_py(args)
        node: NodeConnections | None = router.for_key(key)
        try:
            if node is None:
                node = await router.resolve(key)
            connection = node.ready()
            if connection is None:
                connection = await node.connection()
            return await connection.request(pack_command(*args))
        except _REDIRECTS:
            self.handovers["redirect"] += 1
        except _LOST:
            self.handovers["connection"] += 1
            if node is not None:
                router.stale(node)
        return await self.through_redis_py(args)

    async def through_redis_py(self, args: tuple[Any, ...]) -> Any:
        """One command through redis-py, tried again until the call's deadline while its
        keys' slot is being moved. redis-py tries a TRYAGAIN, or a redirect it keeps
        getting, for about 0.4 s, then gives up ("TTL exhausted"); a big tenant's slot
        takes longer to move, and its scripts (and, on a loaded machine, single-key
        reads) failed meanwhile. Pauses from 10 ms, doubling to 100 ms."""
        task = None  # in `migrating` once set: looked up on the first retry only
        pause = 0.0
        try:
            while True:
                try:
                    return await self.client.execute_command(*args)
                except (rexc.TryAgainError, rexc.ClusterError) as exc:
                    if (not isinstance(exc, rexc.TryAgainError)
                            and "TTL exhausted" not in str(exc)):
                        raise
                if task is None and (task := asyncio.current_task()) is not None:
                    self.migrating.add(task)
                pause = min(max(pause * 2, 0.01), 0.1)
                await asyncio.sleep(pause)
        except asyncio.CancelledError:
            task = None  # left in `migrating`: the store's handler takes it out
            raise
        finally:
            if task is not None:
                self.migrating.discard(task)

    async def send_all(self, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Several hot commands (one per hash slot of a multi-slot call), their replies
        in order. Every one is written before any reply is awaited, so the commands for
        one node leave in one write and the nodes answer in parallel: a batch over many
        tenants costs about one round trip, not one per slot. A command the transport
        cannot carry (no usable connection yet, a redirect, a lost connection) takes
        :meth:`send`'s way through redis-py, in its turn.
        """
        router = self.router
        if router is None or len(calls) == 1:
            return [await self.send(key, args) for key, args in calls]
        sent: list[tuple[NodeConnections, asyncio.Future[Any]] | None] = []
        try:
            for key, args in calls:
                node = router.for_key(key)
                connection = node.ready() if node is not None else None
                if node is None or connection is None:
                    sent.append(None)
                else:
                    sent.append((node, connection.request(pack_command(*args))))
            replies: list[Any] = []
            for (key, args), on_wire in zip(calls, sent, strict=True):
                if on_wire is None:
                    replies.append(await self.send(key, args))
                    continue
                node, future = on_wire
                try:
                    replies.append(await future)
                    continue
                except _REDIRECTS:
                    self.handovers["redirect"] += 1
                except _LOST:
                    self.handovers["connection"] += 1
                    router.stale(node)
                replies.append(await self.through_redis_py(args))
            return replies
        finally:
            # A caller cancelled (or failed) midway: the replies still owed are read and
            # dropped in their turn by their connection, and an error already delivered
            # to one nobody awaited is taken, so that the loop does not report it.
            for on_wire in sent:
                if on_wire is None:
                    continue
                if not on_wire[1].done():
                    on_wire[1].cancel()
                elif not on_wire[1].cancelled():
                    on_wire[1].exception()
