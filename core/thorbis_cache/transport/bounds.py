"""Bounds on the store's calls: a deadline for every call without a timer per call,
and a cap on the calls in flight that queues the others instead of failing them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CallDeadlines", "InFlightGate"]

log = logging.getLogger(__name__)


class CallDeadlines:
    """Bounds how long any store call waits, without a timer per call.

    redis-py enforces ``socket_timeout`` with an ``asyncio.wait_for`` per send and an
    ``asyncio.timeout`` per read: a task and a timer handle on every command, measured at
    a third of a raw GET's latency. Here each call only records its deadline in a dict;
    one watchdog per store wakes every ``timeout / 4`` and cancels the calls that are
    past due, which the store turns into :class:`RedisUnavailableError`. redis-py drops
    a connection whose command was cancelled, so no reply is ever misread.

    The watchdog is a timer that sets itself again, not a task: nothing that cancels
    every task (a loop shutting down, a host's own clean-up) stops it, and one left on a
    loop closed without ceremony is dropped silently with it.

    ``on_tick(now, silence)`` runs at every tick, calls in flight or not: the store's
    router gives up there the servers that owed replies for ``silence`` seconds (a
    call's timeout and one tick) without answering.
    """

    __slots__ = ("_expired", "_inflight", "_interval", "_loop", "_on_new_loop", "_on_tick",
                 "_timer", "timeout")

    def __init__(self, timeout: float, *,
                 on_new_loop: Callable[[asyncio.AbstractEventLoop | None], None] | None = None,
                 on_tick: Callable[[float, float], None] | None = None) -> None:
        self.timeout = timeout
        self._interval = max(0.005, timeout / 4)
        self._inflight: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_new_loop = on_new_loop
        self._on_tick = on_tick

    def arm(self) -> asyncio.Task[Any]:
        """Register the current task's call; pair with :meth:`disarm` in ``finally``.

        The first call from a loop (the first call of all included) calls
        ``on_new_loop`` with the previous loop (None at first), before anything else.

        :raises EventLoopInUseError: from ``on_new_loop``, for a call from another loop
            while the store's loop still runs (nothing is registered then).
        """
        task = asyncio.current_task()
        assert task is not None  # store calls are always awaited inside a task
        if self._timer is None or self._loop is not task.get_loop():
            self._start(task.get_loop())
        self._inflight[task] = time.monotonic() + self.timeout
        return task

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop of the calls so far (None before the first)."""
        return self._loop

    def disarm(self, task: asyncio.Task[Any]) -> None:
        """The call of ``task`` is over."""
        self._inflight.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """After a CancelledError: True (and the cancellation withdrawn) if it was ours."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        previous = self._loop
        if previous is not loop:
            if self._on_new_loop is not None:
                self._on_new_loop(previous)  # may refuse the move: nothing changed yet
            # Calls of the previous loop can no longer be cancelled from here.
            self._inflight = {t: d for t, d in self._inflight.items() if t.get_loop() is loop}
            self._expired = {t for t in self._expired if t.get_loop() is loop}
        self._loop = loop
        if self._timer is not None:
            with contextlib.suppress(RuntimeError):  # on a closed loop (uvloop's refuse)
                self._timer.cancel()
        self._timer = loop.call_later(self._interval, self._watch)

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = loop.call_later(self._interval, self._watch)
        now = time.monotonic()
        if self._on_tick is not None:
            try:
                self._on_tick(now, self.timeout + self._interval)
            except Exception:  # the watchdog must keep running
                log.exception("the store's watchdog tick failed")
        if not self._inflight:
            return
        for task, deadline in list(self._inflight.items()):
            if deadline <= now and task not in self._expired and not task.done():
                self._expired.add(task)
                task.cancel()

    async def aclose(self) -> None:
        """Stop the watchdog. The next call starts afresh, as the first one did (the
        store's connections are closed with it)."""
        self._loop = None
        timer, self._timer = self._timer, None
        if timer is not None:
            with contextlib.suppress(RuntimeError):
                timer.cancel()


class InFlightGate:
    """At most ``limit`` calls in flight; the others queue here, first come first served.

    redis-py's default pool raises "Too many connections" past its size, and its blocking
    pool costs a condition variable on every call (measured: +40% latency). Here the fast
    path is one comparison and one increment; only calls over the limit wait, on a plain
    future each, and a finishing call hands its slot straight to the oldest waiter.
    """

    __slots__ = ("_waiters", "busy", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def wait(self) -> None:
        """Wait for a slot (called when ``busy >= limit``); the slot is ours on return."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give the slot to the oldest live waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1
