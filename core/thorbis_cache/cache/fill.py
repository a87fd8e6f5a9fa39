"""Stampede protection and race-free fills for cache-aside reads.

Three mechanisms, from cheapest to widest:

* :class:`SingleFlight` -- concurrent misses of one key in one process share one load.
* Fill leases (``lua/lease_*.lua``) -- across processes, one client per key holds a
  lease token while loading; its write is a compare-and-set on that token. Every
  invalidation deletes the lease, so a value loaded *before* an invalidation can never
  be written *after* it (memcache leases, Nishtala et al., NSDI 2013). Clients that
  find the lease taken poll briefly for the winner's value instead of loading too.
* :func:`should_recompute_early` -- XFetch (Vattani et al., VLDB 2015): a reader
  recomputes a hot entry shortly before it expires, with a probability that grows as
  expiry nears and with the recompute cost, so expiry never causes a stampede.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from thorbis_cache.store.event_loops import refuse_if_still_running

__all__ = ["SingleFlight", "backoff_delays", "should_recompute_early"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Coalesce concurrent calls for one key into one running task.

    The task is shielded: a caller that is cancelled stops waiting, but the load goes
    on for the others. Tasks are owned here and cancelled by :meth:`cancel_all`.
    """

    def __init__(self, name: str = "fill") -> None:
        self._name = name
        self._tasks: dict[str, asyncio.Task[T]] = {}
        # Revoked flights still running: owned here until they end, so that cancel_all
        # reaches them too.
        self._detached: set[asyncio.Task[T]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self, key: str) -> bool:
        """True while a call for ``key`` is in flight (on the running loop).

        :raises EventLoopInUseError: it is in flight on another loop, still running.
        """
        return key in self._tasks and self._current(key) is not None

    async def do(self, key: str, factory: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``factory()`` once for all concurrent callers of ``key``.

        :returns: the result, and whether this caller joined an existing flight.
        :raises EventLoopInUseError: a flight of ``key`` runs on another loop, still
            running (in another thread); nothing is changed.
        """
        task = self._current(key)
        joined = task is not None
        if task is None:
            task = asyncio.ensure_future(factory())
            task.set_name(f"thorbis-{self._name}:{key[:80]}")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        return await asyncio.shield(task), joined

    def _current(self, key: str) -> asyncio.Task[T] | None:
        """The flight of ``key`` callers on the running loop may join. One left on a loop
        that has stopped (the host moved to another loop) will never end: forgotten."""
        task = self._tasks.get(key)
        if task is None:
            return None
        loop = task.get_loop()
        try:
            if loop is asyncio.get_running_loop():
                return task
        except RuntimeError:  # asked outside any loop
            return task
        if not task.done():
            refuse_if_still_running(loop, key, what=f"the in-process {self._name} of")
        del self._tasks[key]
        return None

    def revoke(self, keys: Iterable[str] = (), prefix: str | None = None) -> int:
        """Detach the flights of ``keys`` (and of every key starting with ``prefix``)
        from their keys: callers already waiting keep waiting for them, callers that
        arrive afterwards start a flight of their own. Called by an invalidation, so
        that no caller arriving after it is served a load that began before it.

        :returns: how many flights were detached.
        """
        doomed = [k for k in keys if k in self._tasks]
        if prefix is not None:
            doomed += [k for k in self._tasks if k.startswith(prefix)]
        for key in doomed:
            task = self._tasks.pop(key, None)
            if task is not None and not task.done():
                self._detached.add(task)
                task.add_done_callback(self._detached.discard)
        return len(doomed)

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            # Mark the exception retrieved: if every waiter was cancelled, nobody else will.
            task.exception()

    async def cancel_all(self) -> None:
        """Cancel every flight and wait for them to end."""
        loop = asyncio.get_running_loop()
        # Flights of a loop that has stopped can neither run nor be cancelled: dropped.
        tasks = [t for t in (*self._tasks.values(), *self._detached) if t.get_loop() is loop]
        self._tasks.clear()
        self._detached.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._detached.clear()


def should_recompute_early(
    now_ms: int, expires_at_ms: int, delta_ms: int, beta: float, rand: float | None = None
) -> bool:
    """XFetch: recompute when ``now - delta * beta * ln(rand) >= expiry``.

    :param delta_ms: how long the last recomputation took.
    :param beta: > 1 favours earlier recomputation, < 1 later; 1 is optimal in the paper.
    :param rand: a uniform draw in (0, 1]; drawn here when None (tests pass one).
    """
    if expires_at_ms <= 0:
        return False
    r = rand if rand is not None else 1.0 - random.random()  # (0, 1], never log(0)
    return now_ms - delta_ms * beta * math.log(r) >= expires_at_ms


def backoff_delays(first: float = 0.002, cap: float = 0.05) -> Callable[[], float]:
    """A generator of doubling delays from ``first`` up to ``cap`` seconds, with jitter
    so waiters of one key do not poll in lock step."""
    state = [first]

    def next_delay() -> float:
        delay = state[0]
        state[0] = min(delay * 2, cap)
        return delay * (0.5 + random.random())

    return next_delay
