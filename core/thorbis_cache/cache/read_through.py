"""Read-through for hashes, sorted sets and geo indexes, as race-safe as ``get_or_load``.

A structure is filled whole from what its loader returns (an entity, or the whole member
set), under the same protocol as values (see :mod:`.fill`):

* a hit is the read command alone; a reader that finds nothing cached takes the key's
  fill lease in one atomic step that also re-checks the key (``lua/struct_read.lua``)
  -- before the load;
* the loaded content replaces the structure only while that lease is still the
  reader's (``lua/struct_fill.lua``: compare, delete, write, in one script, so readers
  never see an empty or half-written structure);
* every invalidation of the key or its tags, and every write of the structure
  (``replace``, ``update``, ``add``, ``remove``), deletes the lease: content loaded
  before it is never written after it;
* concurrent misses in one process share one load; across processes, clients that find
  the lease taken wait for the winner's fill, bounded by ``lease_wait``;
* XFetch: with ``early_recompute`` set, a hit may reload shortly before expiry, from the
  structure's remaining TTL and this process's recent load time for the schema;
* Redis unreachable: the loader answers (bounded concurrency, counted, logged), as for
  values.

**Absence.** A loader raises :class:`~thorbis_cache.errors.MissingRow` when the row does
not exist. With the schema's ``negative_ttl`` set, that absence is cached at the entry's
own key as the string :data:`ABSENT` for ``negative_ttl`` seconds, and later reads raise
``MissingRow`` without reaching the database. An empty member set is cached as the
string :data:`EMPTY` (Redis keeps no empty sorted set). Both live at the key itself, so
every deletion of the key -- a rule, a tag, a cascade -- drops them like any entry.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from thorbis_cache.cache import leases
from thorbis_cache.cache.envelope import CorruptEntry
from thorbis_cache.cache.fill import SingleFlight, should_recompute_early
from thorbis_cache.cache.keys import CacheKey, checked_ttl
from thorbis_cache.cache.leases import ABSENT, EMPTY
from thorbis_cache.errors import (
    MissingRow,
    RedisUnavailableError,
    ValueTooLargeError,
    WrongRedisTypeError,
)

if TYPE_CHECKING:
    from thorbis_cache.cache.metrics import SchemaCounters
    from thorbis_cache.cache.protocol import CacheCore

__all__ = ["ABSENT", "EMPTY", "StructureFills", "StructureRead", "StructureWrite"]

log = logging.getLogger(__name__)

R = TypeVar("R")  # what a read answers
L = TypeVar("L")  # what the loader returns (an entity, or a member mapping)

#: EWMA weight of the newest load time (XFetch's delta for structures).
_DELTA_WEIGHT = 0.3


@attrs.frozen(slots=True)
class StructureRead(Generic[R, L]):
    """One read of a structure through the cache: how Redis answers it when the structure
    is cached, and how it is answered from a load when it is not.

    :ivar redis_type: the Redis type of the cached structure (``hash`` or ``zset``).
    :ivar command: the read command and its arguments after the key.
    :ivar from_reply: the answer from the command's reply; raises
        :class:`~thorbis_cache.cache.envelope.CorruptEntry` for content that does not open.
    :ivar from_loaded: the answer from what the loader returned (an empty mapping for a
        cached :data:`EMPTY`).
    """

    redis_type: str
    command: tuple[Any, ...]
    from_reply: Callable[[Any], R]
    from_loaded: Callable[[L], R]


@attrs.frozen(slots=True)
class StructureWrite(Generic[L]):
    """How a structure's whole content is written by a fill.

    :ivar check: raises :class:`~thorbis_cache.errors.ValueTypeError` for a loaded value
        of the wrong shape.
    :ivar content: the ``struct_fill`` arguments that store the loaded content:
        ``[command, arguments per element, *arguments]``, or ``["MARKER", EMPTY]`` for
        an empty member set.
    :ivar empty: what an :data:`EMPTY` marker stands for, handed to ``from_loaded``
        (None for hashes, which are never empty).
    """

    check: Callable[[L], None]
    content: Callable[[L], list[Any]]
    empty: Any = None


class _NotRefreshed:
    """An early refresh that did not get the lease: the cached structure still stands."""


_NOT_REFRESHED = _NotRefreshed()


class StructureFills:
    """The read-through engine of one :class:`~thorbis_cache.cache.core.Cache` for its hash,
    sorted set and geo schemas (values use :mod:`.value_fill`; both share the lease
    steps of :mod:`.leases`)."""

    def __init__(self, cache: CacheCore) -> None:
        self._cache = cache
        self._flights: SingleFlight[Any] = SingleFlight("struct-fill")
        self._delta_ms: dict[str, float] = {}

    async def aclose(self) -> None:
        """Cancel the loads in flight."""
        await self._flights.cancel_all()

    def revoke(self, names: Iterable[str], prefix: str | None) -> None:
        """See :meth:`Cache.revoke_flights <thorbis_cache.cache.core.Cache.revoke_flights>`."""
        self._flights.revoke(names, prefix)

    async def read(
        self,
        key: CacheKey[Any],
        spec: StructureRead[R, L],
        write: StructureWrite[L],
        loader: Callable[[], Awaitable[L]],
        ttl: float | None,
    ) -> R:
        """Answer ``spec`` from the cached structure of ``key``, or fill it from
        ``loader`` first (see the module docstring for the guarantees).

        :raises MissingRow: the row does not exist (loaded now, or a cached absence).
        :raises RedisUnavailableError: Redis is down and degraded reads are off.
        :raises InvalidParameterError: ``ttl`` is not a TTL.
        """
        if ttl is not None:  # refused before anything is loaded or written
            checked_ttl(key.schema.name, ttl)
        cache = self._cache
        counters = cache.metrics.for_schema(key.schema.name)
        rk = cache.redis_key(key)
        if key.schema.early_recompute is None:
            # The hit path is the read command alone: a non-empty reply can only come
            # from a cached structure. An empty one (nothing cached, a marker, or a range
            # with no member) goes through struct_read, which tells them apart and takes
            # the lease. (XFetch needs the remaining TTL: those schemas use the script.)
            try:
                reply = await cache.store.command(spec.command[0], rk, *spec.command[1:],
                                                  route=rk)
            except WrongRedisTypeError:
                reply = None
            except RedisUnavailableError as exc:
                return spec.from_loaded(await cache.loaders.degraded(counters, key, loader, exc))
            if reply:
                try:
                    answer = spec.from_reply(reply)
                except CorruptEntry as exc:
                    await self.drop(key, rk, exc)
                else:
                    counters.hits += 1
                    return answer
        return await self._read_or_fill(key, rk, counters, spec, write, loader, ttl)

    async def _read_or_fill(
        self,
        key: CacheKey[Any],
        rk: str,
        counters: SchemaCounters,
        spec: StructureRead[R, L],
        write: StructureWrite[L],
        loader: Callable[[], Awaitable[L]],
        ttl: float | None,
    ) -> R:
        """``struct_read`` until the read is answered, a fill (ours or another
        coroutine's) completes, or the wait for another client's fill is over."""
        cache = self._cache
        keys = leases.fill_keys(cache, key)
        lease_ms = int(cache.settings.lease_ttl * 1000)
        wait = leases.LeaseWait(cache, key, counters)
        while True:
            if self._flights.running(rk):
                loaded, _ = await self._flights.do(rk, _unreachable)
                if loaded is _NOT_REFRESHED:
                    continue  # an early refresh that lost the lease: read again
                counters.coalesced += 1
                return spec.from_loaded(loaded)
            token = leases.new_token(self._cache)
            try:
                reply = await cache.store.run(
                    cache._scripts.struct_read, keys,
                    [token, lease_ms, spec.redis_type, *spec.command],
                )
            except RedisUnavailableError as exc:
                return spec.from_loaded(await cache.loaders.degraded(counters, key, loader, exc))
            state = int(reply[0])
            if state == leases.CACHED:
                try:
                    answer = spec.from_reply(reply[1])
                except CorruptEntry as exc:
                    await self.drop(key, rk, exc)
                    continue
                counters.hits += 1
                return await self._maybe_refresh(key, counters, spec, write, loader, ttl,
                                                 answer, int(reply[2]))
            if state == leases.MARKER:
                marker = reply[1]
                if marker == ABSENT:
                    counters.negative_hits += 1
                    raise MissingRow(key.schema.name, key.tenant, rk)
                if marker == EMPTY and write.empty is not None:
                    counters.hits += 1
                    return spec.from_loaded(write.empty)
                await self.drop(key, rk, CorruptEntry("marker", f"unknown marker {marker!r}"))
                continue
            if state == leases.GRANTED:
                counters.misses += 1
                fill = functools.partial(
                    self._load_and_fill, key, counters, token, write, loader, ttl
                )
                loaded, _ = await self._flights.do(rk, fill)
                return spec.from_loaded(loaded)
            # Another client (or a coroutine of ours about to start its flight) holds the
            # lease: wait for its fill, bounded.
            if self._flights.running(rk):
                continue
            if not await wait.pause():
                loaded = await cache.loaders.call(counters, loader)
                write.check(loaded)
                return spec.from_loaded(loaded)

    async def _maybe_refresh(
        self,
        key: CacheKey[Any],
        counters: SchemaCounters,
        spec: StructureRead[R, L],
        write: StructureWrite[L],
        loader: Callable[[], Awaitable[L]],
        ttl: float | None,
        answer: R,
        pttl_ms: int,
    ) -> R:
        """XFetch on a hit: maybe reload early (the winner of the lease only)."""
        beta = key.schema.early_recompute
        if beta is None or pttl_ms <= 0:
            return answer
        now_ms = int(time.time() * 1000)
        delta = int(self._delta_ms.get(key.schema.name, 0.0))
        if not should_recompute_early(now_ms, now_ms + pttl_ms, delta, beta):
            return answer
        counters.early_recomputes += 1
        loaded, _ = await self._flights.do(
            self._cache.redis_key(key), lambda: self._refresh(key, counters, write, loader, ttl)
        )
        return answer if loaded is _NOT_REFRESHED else spec.from_loaded(loaded)

    async def _refresh(
        self,
        key: CacheKey[Any],
        counters: SchemaCounters,
        write: StructureWrite[L],
        loader: Callable[[], Awaitable[L]],
        ttl: float | None,
    ) -> Any:
        token = leases.new_token(self._cache)
        if not await leases.take_for_refresh(self._cache, key, token):
            return _NOT_REFRESHED
        return await self._load_and_fill(key, counters, token, write, loader, ttl)

    async def _load_and_fill(
        self,
        key: CacheKey[Any],
        counters: SchemaCounters,
        token: str,
        write: StructureWrite[L],
        loader: Callable[[], Awaitable[L]],
        ttl: float | None,
    ) -> L:
        cache = self._cache
        schema = key.schema
        started = time.perf_counter()
        try:
            loaded = await cache.loaders.call(counters, loader)
            write.check(loaded)
        except MissingRow:
            if await leases.write_absent(cache, key, token) is False:
                counters.fills_rejected += 1
            raise
        except BaseException:
            # Release our lease at once so waiters take over instead of timing out.
            await leases.release(cache, key, token)
            raise
        took_ms = (time.perf_counter() - started) * 1000
        previous = self._delta_ms.get(schema.name)
        self._delta_ms[schema.name] = took_ms if previous is None else (
            previous + _DELTA_WEIGHT * (took_ms - previous))
        rk = cache.redis_key(key)
        try:
            content = write.content(loaded)
        except ValueTooLargeError as exc:
            await leases.give_up_oversized(cache, key, token, counters, exc)
            return loaded
        try:
            written = await leases.write(cache, key, token, cache.ttl_ms(schema, ttl), content)
        except RedisUnavailableError as exc:
            log.warning("could not write the fill of %s: %s", rk, exc)
            return loaded
        if not written:
            counters.fills_rejected += 1
            log.debug("fill of %s rejected: invalidated while loading", rk)
        return loaded

    async def drop(self, key: CacheKey[Any], rk: str, exc: CorruptEntry) -> None:
        """Delete a structure that does not open (counted, logged): the next read loads.
        (Redis down: it stays unreadable, and the next reader drops it.)"""
        cache = self._cache
        cache.metrics.corrupt(key.schema.name, exc.reason)
        log.warning(
            "dropping unreadable cache entry %s (schema %s, tenant %s): %s",
            rk, key.schema.name, key.tenant, exc,
        )
        with contextlib.suppress(RedisUnavailableError):
            await cache.store.delete([rk])


async def _unreachable() -> Any:
    """Joining a running flight never starts one: the factory is not called."""
    raise AssertionError("joined a flight that had already ended")
