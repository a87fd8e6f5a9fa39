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

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from thorbis_cache.envelope import CorruptEntry
from thorbis_cache.errors import MissingRow, RedisUnavailableError, WrongRedisTypeError
from thorbis_cache.fill import SingleFlight, backoff_delays, should_recompute_early
from thorbis_cache.keys import CacheKey
from thorbis_cache.redis_store import Script, load_scripts

if TYPE_CHECKING:
    from thorbis_cache.cache import Cache
    from thorbis_cache.metrics import SchemaCounters

__all__ = ["ABSENT", "EMPTY", "StructureFills", "StructureRead"]

log = logging.getLogger(__name__)

R = TypeVar("R")  # what a read answers
L = TypeVar("L")  # what the loader returns (an entity, or a member mapping)

#: The string a read-through stores at a key whose row does not exist (``negative_ttl``).
#: It starts with a NUL byte, so it is never an envelope (``TC``) nor a member.
ABSENT = b"\x00tc:absent"
#: The string stored for a sorted set or geo index whose loader returned no member.
EMPTY = b"\x00tc:empty"

_HIT, _GRANTED, _HELD, _MARKER = 1, 2, 3, 4
#: EWMA weight of the newest load time (XFetch's delta for structures).
_DELTA_WEIGHT = 0.3


@attrs.frozen(slots=True)
class StructureRead(Generic[R, L]):
    """One read of a structure through the cache: how Redis answers it when the structure
    is cached, and how it is answered from a load when it is not.

    :ivar redis_type: the Redis type of the cached structure (``hash`` or ``zset``).
    :ivar command: the read command and its arguments after the key.
    :ivar from_reply: the answer from the command's reply; raises
        :class:`~thorbis_cache.envelope.CorruptEntry` for content that does not open.
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
    :ivar arguments: ``(command, arguments per element, arguments)`` of the write that
        stores the loaded content, or None for an empty member set (stored as
        :data:`EMPTY`).
    :ivar empty: what an :data:`EMPTY` marker stands for, handed to ``from_loaded``
        (None for hashes, which are never empty).
    """

    check: Callable[[L], None]
    arguments: Callable[[L], tuple[str, int, list[Any]] | None]
    empty: Any = None


@attrs.frozen(slots=True)
class _Scripts:
    struct_read: Script
    struct_fill: Script
    delete_if_equal: Script

    @classmethod
    def load(cls) -> _Scripts:
        return load_scripts(cls)


class _NotRefreshed:
    """An early refresh that did not get the lease: the cached structure still stands."""


_NOT_REFRESHED = _NotRefreshed()


class StructureFills:
    """The read-through engine of one :class:`~thorbis_cache.cache.Cache` for its hash,
    sorted set and geo schemas (values use the cache's own ``get_or_load`` path, with the
    same lease protocol)."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self.scripts = _Scripts.load()
        self._flights: SingleFlight[Any] = SingleFlight("struct-fill")
        self._delta_ms: dict[str, float] = {}

    async def aclose(self) -> None:
        """Cancel the loads in flight."""
        await self._flights.cancel_all()

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
        """
        cache = self._cache
        counters = cache.metrics.for_schema(key.schema.name)
        rk = cache.redis_key(key)
        keys = [rk, cache.lease_key(key), *cache.tag_keys(key)]
        lease_ms = int(cache.settings.lease_ttl * 1000)
        if key.schema.early_recompute is None:
            # The hit path is the read command alone: a non-empty reply can only come
            # from a cached structure. An empty one (nothing cached, a marker, or a range
            # with no member) goes through struct_read, which tells them apart and takes
            # the lease. (XFetch needs the remaining TTL: those schemas use the script.)
            try:
                reply = await cache.store.command(spec.command[0], rk, *spec.command[1:])
            except WrongRedisTypeError:
                reply = None
            except RedisUnavailableError as exc:
                loaded = await self._cache._degraded_load(counters, key, loader, exc)
                return spec.from_loaded(loaded)
            if reply:
                try:
                    answer = spec.from_reply(reply)
                except CorruptEntry as exc:
                    await self._drop(key, rk, exc)
                else:
                    counters.hits += 1
                    return answer
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        next_delay = backoff_delays()
        while True:
            if self._flights.running(rk):
                loaded, _ = await self._flights.do(rk, _unreachable)
                if loaded is _NOT_REFRESHED:
                    continue  # an early refresh that lost the lease: read again
                counters.coalesced += 1
                return spec.from_loaded(loaded)
            token = secrets.token_hex(12)
            try:
                reply = await cache.store.run(
                    self.scripts.struct_read, keys,
                    [token, lease_ms, "miss", spec.redis_type, *spec.command],
                )
            except RedisUnavailableError as exc:
                loaded = await self._cache._degraded_load(counters, key, loader, exc)
                return spec.from_loaded(loaded)
            state = int(reply[0])
            if state == _HIT:
                try:
                    answer = spec.from_reply(reply[1])
                except CorruptEntry as exc:
                    await self._drop(key, rk, exc)
                    continue
                counters.hits += 1
                return await self._maybe_refresh(key, counters, spec, write, loader, ttl,
                                                 answer, int(reply[2]))
            if state == _MARKER:
                marker = reply[1]
                if marker == ABSENT:
                    counters.negative_hits += 1
                    raise MissingRow(key.schema.name, key.tenant, rk)
                if marker == EMPTY and write.empty is not None:
                    counters.hits += 1
                    return spec.from_loaded(write.empty)
                await self._drop(key, rk, CorruptEntry("marker", f"unknown marker {marker!r}"))
                continue
            if state == _GRANTED:
                counters.misses += 1
                fill = functools.partial(
                    self._load_and_fill, key, counters, keys, token, write, loader, ttl
                )
                loaded, _ = await self._flights.do(rk, fill)
                return spec.from_loaded(loaded)
            # Another client (or a coroutine of ours about to start its flight) holds the
            # lease: wait for its fill, bounded.
            if self._flights.running(rk):
                continue
            if deadline is None:
                counters.lease_waits += 1
                deadline = loop.time() + cache.settings.lease_wait
            elif loop.time() >= deadline:
                counters.lease_timeouts += 1
                log.warning(
                    "gave up waiting %.2fs for the fill of %s (schema %s, tenant %s); "
                    "loading without caching",
                    cache.settings.lease_wait, rk, key.schema.name, key.tenant,
                )
                loaded = await cache._call_loader(counters, loader)
                write.check(loaded)
                return spec.from_loaded(loaded)
            await asyncio.sleep(next_delay())

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
        rk = self._cache.redis_key(key)
        loaded, _ = await self._flights.do(
            rk, lambda: self._refresh(key, counters, write, loader, ttl)
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
        cache = self._cache
        keys = [cache.redis_key(key), cache.lease_key(key), *cache.tag_keys(key)]
        token = secrets.token_hex(12)
        try:
            reply = await cache.store.run(
                self.scripts.struct_read, keys,
                [token, int(cache.settings.lease_ttl * 1000), "refresh", "none", "ZCARD"],
            )
        except RedisUnavailableError:
            return _NOT_REFRESHED
        if int(reply[0]) != _GRANTED:
            return _NOT_REFRESHED
        return await self._load_and_fill(key, counters, keys, token, write, loader, ttl)

    async def _load_and_fill(
        self,
        key: CacheKey[Any],
        counters: SchemaCounters,
        keys: Sequence[str],
        token: str,
        write: StructureWrite[L],
        loader: Callable[[], Awaitable[L]],
        ttl: float | None,
    ) -> L:
        cache = self._cache
        schema = key.schema
        started = time.perf_counter()
        try:
            loaded = await cache._call_loader(counters, loader)
            write.check(loaded)
        except MissingRow:
            if schema.negative_ttl is not None:
                await self._fill(key, counters, keys, token,
                                 cache.ttl_ms(schema, schema.negative_ttl), ["MARKER", ABSENT])
            else:
                await self._release(keys[1], token)
            raise
        except BaseException:
            # Release our lease at once so waiters take over instead of timing out.
            await self._release(keys[1], token)
            raise
        took_ms = (time.perf_counter() - started) * 1000
        previous = self._delta_ms.get(schema.name)
        self._delta_ms[schema.name] = took_ms if previous is None else (
            previous + _DELTA_WEIGHT * (took_ms - previous))
        arguments = write.arguments(loaded)
        args: list[Any]
        if arguments is None:
            args = ["MARKER", EMPTY]
        else:
            command, arity, rest = arguments
            args = [command, arity, *rest]
        await self._fill(key, counters, keys, token, cache.ttl_ms(schema, ttl), args)
        return loaded

    async def _fill(
        self,
        key: CacheKey[Any],
        counters: SchemaCounters,
        keys: Sequence[str],
        token: str,
        ttl_ms: int,
        args: list[Any],
    ) -> None:
        try:
            written = await self._cache.store.run(
                self.scripts.struct_fill, keys, [token, ttl_ms, *args]
            )
        except RedisUnavailableError as exc:
            log.warning("could not write the fill of %s: %s", keys[0], exc)
            return
        if not written:
            counters.fills_rejected += 1
            log.debug("fill of %s rejected: invalidated while loading", keys[0])

    async def _release(self, lease: str, token: str) -> None:
        with contextlib.suppress(RedisUnavailableError):
            await self._cache.store.run(self.scripts.delete_if_equal, [lease], [token])

    async def _drop(self, key: CacheKey[Any], rk: str, exc: CorruptEntry) -> None:
        """Delete a structure that does not open (counted, logged): the next read loads."""
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
