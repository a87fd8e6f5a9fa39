"""Calling a schema's loader on a miss: counted (loads, rows that do not exist, errors),
and the degraded path while Redis is unreachable, where the loader answers with bounded
concurrency (``CacheSettings.serve_from_loader_when_unavailable``). Every fill, of
values and of structures, loads through here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.cache.metrics import SchemaCounters
from thorbis_cache.cache.settings import CacheSettings
from thorbis_cache.errors import MissingRow, RedisUnavailableError

__all__ = ["Loader", "LoaderCalls"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: what a fill calls on a miss: the value, loaded from the source of truth
Loader = Callable[[], Awaitable[T]]


class LoaderCalls:
    """One cache's loader calls.

    :param settings: the cache's settings (whether and how many degraded loads).
    """

    def __init__(self, settings: CacheSettings) -> None:
        self._settings = settings
        # One per event loop: a semaphore waited on from one loop cannot be waited on
        # from the next (a host moving from loop to loop; docs/host-application.md).
        self._degraded: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    async def call(self, counters: SchemaCounters, loader: Loader[T]) -> T:
        """``loader()``, counted in the schema's ``counters``; its exception propagates."""
        counters.loads += 1
        try:
            return await loader()
        except MissingRow:
            counters.absent_loads += 1
            raise
        except BaseException:
            counters.load_errors += 1
            raise

    async def degraded(self, counters: SchemaCounters, key: CacheKey[Any],
                       loader: Loader[T], exc: RedisUnavailableError) -> T:
        """Redis is unreachable: answer from the loader (bounded concurrency, counted,
        logged), or raise ``exc`` when degraded reads are off."""
        if not self._settings.serve_from_loader_when_unavailable:
            raise exc
        counters.degraded_loads += 1
        log.warning(
            "redis unavailable (%s); serving %s for tenant %s from the loader",
            exc, key.schema.name, key.tenant,
        )
        loop = asyncio.get_running_loop()
        if self._degraded is None or self._degraded[0] is not loop:
            self._degraded = (loop, asyncio.Semaphore(self._settings.degraded_concurrency))
        async with self._degraded[1]:
            return await self.call(counters, loader)
