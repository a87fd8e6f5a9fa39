"""The fill-lease steps every fill shares: value read-through (:mod:`.value_fill`),
structure read-through (:mod:`.read_through`) and warm batches (:mod:`.warming`).

* :func:`new_token` -- a fresh lease token (the scripts store it with the granting
  master's replication ID: ``lua/_lease_owner.lua``);
* :func:`fill_keys` -- the keys a lease script takes: the entry, its lease, its tag sets;
* :func:`write` -- the compare-and-set write of an entry under a lease (``lease_fill``
  for a value, ``struct_fill`` for a hash, sorted set or geo index);
* :func:`write_absent` -- a loader found no row: cache :data:`ABSENT` under the lease
  for the schema's ``negative_ttl``, or release the lease when it caches no absence;
* :func:`release` -- give a lease back at once, so waiters take over;
* :class:`LeaseWait` -- the bounded wait of a client that found the lease taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

from thorbis_cache.cache.fill import backoff_delays
from thorbis_cache.cache.keys import CacheKey, SchemaKind
from thorbis_cache.errors import RedisUnavailableError, ValueTooLargeError

if TYPE_CHECKING:
    from thorbis_cache.cache.metrics import SchemaCounters
    from thorbis_cache.cache.protocol import CacheCore

__all__ = [
    "ABSENT", "CACHED", "EMPTY", "GRANTED", "HELD", "MARKER", "LeaseWait", "fill_keys",
    "give_up_oversized", "new_token", "release", "write", "write_absent",
]

log = logging.getLogger(__name__)

#: The first element of a lease script's reply (lease_acquire.lua, struct_read.lua): the
#: entry is cached (with its value or read reply), the lease is the caller's, another
#: client holds it, or a marker (:data:`ABSENT`, :data:`EMPTY`) stands at the key.
CACHED, GRANTED, HELD, MARKER = 1, 2, 3, 4

#: The string a fill stores at a key whose row does not exist (``negative_ttl``). It
#: starts with a NUL byte, so it is never an envelope (``TC``) nor a member.
ABSENT = b"\x00tc:absent"
#: The string stored for a sorted set or geo index whose loader returned no member.
EMPTY = b"\x00tc:empty"


def new_token(cache: CacheCore) -> str:
    """A fresh random fill-lease token.

    The scripts store it as ``token@replication-id`` of the master granting the lease
    and compare the same on fill (``lua/_lease_owner.lua``): a lease granted by a
    master that died, revoked there by an invalidation its replicas never received, is
    back on the promoted replica -- whose replication ID is new, so the fill of content
    loaded before the invalidation is refused there.
    """
    return secrets.token_hex(12)


def fill_keys(cache: CacheCore, key: CacheKey[Any]) -> list[str]:
    """``[entry, lease, *tag sets]``: the KEYS of every lease script."""
    return [cache.redis_key(key), cache.lease_key(key), *cache.tag_keys(key)]


async def take_for_refresh(cache: CacheCore, key: CacheKey[Any], token: str) -> bool:
    """Take ``key``'s fill lease for an early recomputation (``lease_acquire``'s refresh
    mode: the lease alone, nothing read). False when another client holds it, or Redis
    cannot be reached: the caller then keeps serving what it has."""
    try:
        reply = await cache.store.run(
            cache._scripts.lease_acquire, fill_keys(cache, key),
            [token, int(cache.settings.lease_ttl * 1000), "refresh"])
    except RedisUnavailableError:
        return False
    return int(reply[0]) == GRANTED


async def write(cache: CacheCore, key: CacheKey[Any], token: str, ttl_ms: int,
                content: bytes | list[Any]) -> bool:
    """Write ``content`` at ``key`` if ``token`` still holds its lease: the encoded
    value of a value schema, or the ``struct_fill`` arguments of a structure
    (``[command, arity, *arguments]`` or ``["MARKER", marker]``).

    :returns: whether it was written (False: invalidated while loading, or granted by
        a master that has failed over since: see :func:`new_token`).
    :raises RedisUnavailableError: Redis cannot be reached.
    """
    scripts = cache._scripts
    if key.schema.kind is SchemaKind.VALUE:
        args: list[Any] = [token, content, ttl_ms]
        return bool(await cache.store.run(scripts.lease_fill, fill_keys(cache, key), args))
    assert isinstance(content, list)  # a structure's fill is its write's arguments
    return bool(await cache.store.run(scripts.struct_fill, fill_keys(cache, key),
                                      [token, ttl_ms, *content]))


async def write_absent(cache: CacheCore, key: CacheKey[Any], token: str) -> bool | None:
    """The loader found no row: cache the absence for the schema's ``negative_ttl``
    under the same lease (so an INSERT committed meanwhile still wins), or release the
    lease when the schema caches no absence. Redis being down is not an error here.

    :returns: whether the absence was written; None when none is cached (or Redis is
        down).
    """
    schema = key.schema
    if schema.negative_ttl is None:
        await release(cache, key, token)
        return None
    content: bytes | list[Any] = ABSENT if schema.kind is SchemaKind.VALUE else [
        "MARKER", ABSENT]
    try:
        return await write(cache, key, token, cache.ttl_ms(schema, schema.negative_ttl),
                           content)
    except RedisUnavailableError:
        return None


async def release(cache: CacheCore, key: CacheKey[Any], token: str) -> None:
    """Delete the lease of ``key`` if ``token`` still holds it (Redis down: it expires)."""
    with contextlib.suppress(RedisUnavailableError):
        await cache.store.run(cache._scripts.lease_release, [cache.lease_key(key)], [token])


async def give_up_oversized(cache: CacheCore, key: CacheKey[Any], token: str,
                            counters: SchemaCounters, exc: ValueTooLargeError) -> None:
    """A loaded value too large to cache (see :class:`ValueTooLargeError`): release the
    lease, so that waiters load for themselves instead of waiting it out, and count and
    say that it was served uncached."""
    await release(cache, key, token)
    counters.oversized_loads += 1
    log.warning("%s (key %s): served from the loader without caching", exc,
                cache.redis_key(key))


class LeaseWait:
    """The wait of a client that found another client filling ``key``: jittered back-off
    until ``lease_wait`` has passed, counted (``lease_waits``, ``lease_timeouts``) and,
    when it gives up, logged -- the caller then loads without caching."""

    __slots__ = ("_cache", "_counters", "_deadline", "_key", "_next_delay")

    def __init__(self, cache: CacheCore, key: CacheKey[Any], counters: SchemaCounters) -> None:
        self._cache = cache
        self._key = key
        self._counters = counters
        self._deadline: float | None = None
        self._next_delay = backoff_delays()

    async def pause(self) -> bool:
        """Wait a little before asking again; False when the wait is over."""
        loop = asyncio.get_running_loop()
        wait = self._cache.settings.lease_wait
        if self._deadline is None:
            self._counters.lease_waits += 1
            self._deadline = loop.time() + wait
        elif loop.time() >= self._deadline:
            self._counters.lease_timeouts += 1
            log.warning(
                "gave up waiting %.2fs for the fill of %s (schema %s, tenant %s); "
                "loading without caching",
                wait, self._cache.redis_key(self._key), self._key.schema.name,
                self._key.tenant,
            )
            return False
        await asyncio.sleep(self._next_delay())
        return True
