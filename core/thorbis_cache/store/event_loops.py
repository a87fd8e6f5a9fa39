"""A store that follows its host from one event loop to the next.

Connections, futures and locks belong to the event loop they were made on. A host does
not always keep one loop: a command-line tool calls ``asyncio.run`` per command, Django's
``async_to_sync`` runs each call on a loop of its own, pytest-asyncio gives each test a
fresh one. The store notices a new loop on the first call made from it (the deadline
watchdog already compares loops on every call, so the hot path pays nothing more) and,
once the previous loop has stopped, lets go of everything opened there: the multiplexed
connections, and the connections of the redis-py clients, which reconnect on the new
loop at their next command. A previous loop still running (in another thread) keeps the
store: the call gets :class:`~thorbis_cache.errors.EventLoopInUseError` instead.

Most hosts end a loop the same way (``asyncio.run``, ``uvloop.run``, pytest-asyncio and
asgiref all call ``loop.shutdown_asyncgens()`` before closing it), and :class:`LoopEnd`
uses that to close the store's connections on the loop itself, properly, while it can
still run callbacks; what a loop closed any other way left open is let go of on the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from thorbis_cache.errors import EventLoopInUseError

__all__ = ["LoopEnd", "refuse_if_still_running", "release_connections"]

log = logging.getLogger(__name__)


def refuse_if_still_running(loop: asyncio.AbstractEventLoop, address: str, *,
                            what: str = "redis store on") -> None:
    """Refuse to take over what was opened on ``loop`` (another loop than the running
    one) while ``loop`` still runs, in another thread: the store, the near cache's
    subscriber and the in-process fills all decide here.

    :raises EventLoopInUseError: naming ``what`` and ``address``.
    """
    if not loop.is_closed() and loop.is_running():
        raise EventLoopInUseError(address, what=what)


async def release_connections(client: aioredis.Redis | RedisCluster) -> None:
    """Disconnect every connection of ``client`` (and of a Sentinel group's sentinel
    clients); its next command connects again, on the loop running then.

    Called as the connections' loop ends (they close properly) or from the next loop
    once it has stopped. redis-py's own ``disconnect`` is used: it forgets each
    connection's streams before closing them, so a close that fails because the old
    loop is closed ("Event loop is closed") still leaves the connection ready to
    reconnect, and the socket is closed when its transport is collected.
    """
    disconnects: list[Coroutine[Any, Any, None]]
    if isinstance(client, RedisCluster):
        nodes: dict[int, ClusterNode] = {}
        manager = client.nodes_manager
        for node in (*manager.nodes_cache.values(), *manager.startup_nodes.values()):
            nodes[id(node)] = node
        disconnects = [node.disconnect() for node in nodes.values()]
    else:
        pool = client.connection_pool
        disconnects = [pool.disconnect()]
        if isinstance(pool, SentinelConnectionPool):
            disconnects += [sentinel.connection_pool.disconnect()
                            for sentinel in pool.sentinel_manager.sentinels]
    for disconnect in disconnects:
        try:
            await disconnect
        except Exception as exc:
            log.debug("redis connections of a stopped event loop dropped: %r", exc)


class LoopEnd:
    """Runs ``on_end`` on an event loop as it shuts down.

    :meth:`arm` starts an async generator that waits at its first ``yield``; the loop
    keeps it among its open generators, and ``shutdown_asyncgens()`` closes it, which
    runs ``on_end`` on that loop before it is closed. Armed again on the next loop, the
    previous generator is closed at once, without running ``on_end``.
    """

    __slots__ = ("_on_end", "_waiting")

    def __init__(self, on_end: Callable[[], Awaitable[None]]) -> None:
        self._on_end = on_end
        self._waiting: AsyncGenerator[None, None] | None = None

    def arm(self) -> None:
        """Wait for the end of the running loop (call from a task on it)."""
        self.disarm()
        waiting = self._wait()
        self._waiting = waiting
        with contextlib.suppress(StopIteration):
            waiting.asend(None).send(None)  # runs to the first yield: the loop holds it

    def disarm(self) -> None:
        """Stop waiting, without running ``on_end``."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            with contextlib.suppress(StopIteration):
                waiting.aclose().send(None)

    async def _wait(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # Closed by the loop (still the one armed): the loop is shutting down.
            if self._waiting is not None:
                self._waiting = None
                await self._on_end()
