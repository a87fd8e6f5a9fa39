"""Async work from synchronous test code: a coroutine run on an event loop in a thread of
its own, so that it never meets the loop pytest-asyncio manages in the main thread
(``asyncio.run`` there would reset that thread's current loop). The contract kit's
sync tests and the session fixtures' PostgreSQL setup both run this way.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "run_async"]

_T = TypeVar("_T")



def run_async(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a new event loop in a thread of its own.

    The thread keeps the kit away from any loop pytest-asyncio manages in the main
    thread, so sync tests work in strict and auto mode alike.

    :param factory: builds the coroutine to run (it runs on the worker thread's loop).
    :returns: the coroutine's result.
    :raises BaseException: whatever the coroutine raised.
    """
    with LoopThread() as loop:
        return loop.run(factory())


class LoopThread:
    """An event loop running in a daemon thread, for sync code that awaits repeatedly
    on long-lived async objects (a :class:`Cache` across hypothesis examples).

    Use as a context manager; on exit, tasks still pending are cancelled, async
    generators closed, the loop stopped and the thread joined.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="thorbis-test-loop", daemon=True
        )

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._finish())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def run(self, awaitable: Awaitable[_T]) -> _T:
        """Run ``awaitable`` on the loop and wait for its result.

        :raises BaseException: whatever the awaitable raised.
        """
        async def wrap() -> _T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result()

    async def _finish(self) -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._loop.shutdown_asyncgens()
        await self._loop.shutdown_default_executor()
