"""Warming under fill leases: a batch of keys is leased *before* its rows are read.

A warmer that reads rows and then writes them races with invalidations exactly as a
naive cache-aside read does: an UPDATE that commits between the read and the write
finds no key to delete, and the warmer then writes the old row for a whole TTL. So a
warmer yields :class:`WarmBatch` es -- the keys it means to fill and a loader for them --
and :func:`warm` runs each batch as a batched read-through:

1. take the fill lease of every key of the batch that is not cached (one script per
   key, concurrently; a key already cached, or being filled by another client, is
   left alone);
2. call the batch's ``load`` with the leased keys only -- one query for the batch;
3. write each loaded entry under its lease (compare-and-set): an entry invalidated
   since step 1 is refused, like a stale read-through fill. A leased key the loader
   did not return is an absent row: cached as absent when its schema has a
   ``negative_ttl``, else its lease is released.

Entries take the shape a read-through loader of the same schema returns: the record for
a value or a hash, member -> score for a sorted set, member -> ``(longitude, latitude)``
for a geo index (the whole structure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from thorbis_cache.cache import leases
from thorbis_cache.cache.keys import CacheKey, KeySchema, SchemaKind
from thorbis_cache.errors import InvalidParameterError, ValueTooLargeError

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache

__all__ = ["WarmBatch", "WarmOutcome", "batch_of", "warm"]

#: ``async (leased keys) -> {key: entry}``: reads the rows of the keys it is given.
BatchLoader = Callable[[Sequence[CacheKey[Any]]], Awaitable[Mapping[CacheKey[Any], Any]]]

#: The cheap read a structure's lease probe runs when the structure is cached.
_PROBES: dict[SchemaKind, tuple[str, tuple[Any, ...]]] = {
    SchemaKind.HASH: ("hash", ("HMGET", "~v")),
    SchemaKind.ZSET: ("zset", ("ZCARD",)),
    SchemaKind.GEO: ("zset", ("ZCARD",)),
}


def _key_tuple(keys: Iterable[CacheKey[Any]]) -> tuple[CacheKey[Any], ...]:
    return tuple(keys)


@attrs.frozen(slots=True)
class WarmBatch:
    """Keys a warmer wants filled, and how to read their entries.

    :ivar keys: the keys (of the warmer's plugin, usually of one tenant).
    :ivar load: ``async (keys) -> {key: entry}``, called with the keys whose fill lease
        was taken (a subset of ``keys``, never empty); reads the database *after* the
        leases, so a change committed meanwhile revokes the lease of its key.
    :ivar description: what the batch holds, for logs ("top customers").
    """

    keys: tuple[CacheKey[Any], ...] = attrs.field(converter=_key_tuple)
    load: BatchLoader
    description: str = ""


P = TypeVar("P")
E = TypeVar("E")


def batch_of(
    schema: KeySchema[Any],
    tenant: str,
    values: Iterable[P],
    load: Callable[[list[P]], Awaitable[Mapping[P, Any] | Iterable[E]]],
    *,
    key_of: Callable[[E], P] | None = None,
    description: str = "",
) -> WarmBatch:
    """The batch of ``schema``'s keys (a schema of one parameter) for ``values`` of that
    parameter, most warmers' shape: its loader calls ``load`` with the leased values
    only, which returns either a mapping value -> entry, or entries that ``key_of`` maps
    back to their value (``lambda customer: customer.id``).

    :raises InvalidParameterError: the schema has not exactly one parameter.
    """
    if len(schema.params) != 1:
        raise InvalidParameterError(
            schema.name, "params",
            f"batch_of needs a schema of one parameter, it has {len(schema.params)}")
    name = schema.params[0].name
    keys = {v: schema.key(tenant, **{name: v}) for v in dict.fromkeys(values)}
    by_key = {k: v for v, k in keys.items()}

    def key(value: Any) -> CacheKey[Any]:
        found = keys.get(value)
        if found is None:
            raise InvalidParameterError(
                schema.name, name, f"batch {description!r} loaded {value!r}, not one of "
                "the values it was asked for")
        return found

    async def entries(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        found = await load([by_key[k] for k in leased])
        if isinstance(found, Mapping):
            return {key(v): e for v, e in found.items()}
        if key_of is None:
            raise InvalidParameterError(
                schema.name, "key_of",
                f"the loader of batch {description!r} returned entries, not a mapping: "
                "pass key_of")
        return {key(key_of(e)): e for e in found}

    return WarmBatch(tuple(keys.values()), entries, description or f"{len(keys)} {schema.name}")


@attrs.frozen(slots=True)
class WarmOutcome:
    """What one :func:`warm` call did, key by key.

    :ivar filled: entries written.
    :ivar cached: keys already cached (left as they were).
    :ivar busy: keys another client was filling (left to it).
    :ivar rejected: entries refused because the key was invalidated while loading.
    :ivar absent: leased keys the loader returned no entry for (absent rows).
    :ivar oversized: entries larger than ``max_value_size`` (not written, counted in
        ``oversized_loads`` and logged, as a read-through does with them).
    """

    filled: int = 0
    cached: int = 0
    busy: int = 0
    rejected: int = 0
    absent: int = 0
    oversized: int = 0

    def __add__(self, other: WarmOutcome) -> WarmOutcome:
        return WarmOutcome(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other))))


async def warm(cache: Cache, batch: WarmBatch) -> WarmOutcome:
    """Fill the uncached keys of ``batch`` from one call of its loader, each under its
    fill lease (see the module docstring).

    :raises InvalidParameterError: the loader returned a key it was not given.
    :raises ValueTypeError: an entry is not of its schema's type (nothing of the batch
        is written; the leases are released).
    :raises RedisUnavailableError: Redis cannot be reached.
    :raises BaseException: whatever the loader raised (the leases are released).
    """
    keys = list(dict.fromkeys(batch.keys))
    if not keys:
        return WarmOutcome()
    tokens = [leases.new_token(cache) for _ in keys]
    states = await asyncio.gather(*(_lease(cache, k, t) for k, t in zip(keys, tokens)))
    leased = [(k, t) for k, t, s in zip(keys, tokens, states) if s == leases.GRANTED]
    cached = sum(1 for s in states if s in (leases.CACHED, leases.MARKER))
    busy = sum(1 for s in states if s == leases.HELD)
    if not leased:
        return WarmOutcome(cached=cached, busy=busy)
    try:
        entries = await batch.load([k for k, _ in leased])
        given = {k for k, _ in leased}
        for key in entries:
            if key not in given:
                raise InvalidParameterError(
                    key.schema.name, "key",
                    f"warm batch {batch.description or '?'} loaded {cache.redis_key(key)!r}, "
                    "which it was not asked for",
                )
        loaded = []
        oversized = []
        for k, t in leased:
            if k in entries:
                try:
                    loaded.append((k, t, _content(cache, k, entries[k])))
                except ValueTooLargeError as exc:  # that entry only, as a fill would
                    oversized.append((k, t, exc))
    except BaseException:
        await asyncio.gather(*(leases.release(cache, k, t) for k, t in leased))
        raise
    for k, t, refused in oversized:
        await leases.give_up_oversized(cache, k, t, cache.metrics.for_schema(k.schema.name),
                                       refused)
    written = await asyncio.gather(*(
        leases.write(cache, k, t, ttl_ms, content) for k, t, (ttl_ms, content) in loaded
    ))
    filled = sum(1 for ok in written if ok)
    absent = [(k, t) for k, t in leased if k not in entries]
    await asyncio.gather(*(leases.write_absent(cache, k, t) for k, t in absent))
    return WarmOutcome(filled=filled, cached=cached, busy=busy,
                       rejected=len(loaded) - filled, absent=len(absent),
                       oversized=len(oversized))


async def _lease(cache: Cache, key: CacheKey[Any], token: str) -> int:
    lease_ms = int(cache.settings.lease_ttl * 1000)
    kind = key.schema.kind
    cache._runtime(key.schema)  # raises for a schema the cache does not know
    if kind is SchemaKind.VALUE:
        script, args = cache._scripts.lease_acquire, [token, lease_ms, "miss"]
    else:
        redis_type, probe = _PROBES[kind]
        script = cache._scripts.struct_read
        args = [token, lease_ms, redis_type, *probe]
    return int((await cache.store.run(script, leases.fill_keys(cache, key), args))[0])


def _content(cache: Cache, key: CacheKey[Any], entry: Any) -> tuple[int, bytes | list[Any]]:
    """The TTL and what :func:`leases.write` stores for ``entry``: checked and encoded
    now, so a bad entry fails the batch before anything is written."""
    schema = key.schema
    ttl_ms = cache.ttl_ms(schema)
    if schema.kind is SchemaKind.VALUE:
        rt = cache._runtime(schema)
        rt.codec.check(entry)
        return ttl_ms, rt.codec.encode(entry, cache.redis_key(key).encode(), key.tenant,
                                       cache._timing(schema, ttl_ms, 0))
    handle: Any = {SchemaKind.HASH: cache.hash, SchemaKind.ZSET: cache.zset,
                   SchemaKind.GEO: cache.geo}[schema.kind](key)
    write = handle._fill_write()
    write.check(entry)
    content: list[Any] = write.content(entry)
    return ttl_ms, content
