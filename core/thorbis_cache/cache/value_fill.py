"""``get_or_load`` for value schemas: single flight, fill leases, XFetch, negative
caching and degraded mode (the protocol is described in :mod:`.fill` and
``docs/architecture.md``; hashes, sorted sets and geo indexes use the same protocol in
:mod:`.read_through`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from thorbis_cache.cache import leases
from thorbis_cache.cache.envelope import CorruptEntry
from thorbis_cache.cache.fill import SingleFlight, should_recompute_early
from thorbis_cache.cache.keys import CacheKey, checked_ttl
from thorbis_cache.cache.leases import ABSENT
from thorbis_cache.errors import (
    MissingRow,
    RedisUnavailableError,
    ValueTooLargeError,
    WrongRedisTypeError,
)

if TYPE_CHECKING:
    from thorbis_cache.cache.protocol import CacheCore, Loader, SchemaRuntime

__all__ = ["ValueFills"]

log = logging.getLogger(__name__)

T = TypeVar("T")




class ValueFills:
    """The cache-aside engine of one :class:`~thorbis_cache.cache.core.Cache` for its value
    schemas; its in-process flights are cancelled by :meth:`aclose`."""

    def __init__(self, cache: CacheCore) -> None:
        self._cache = cache
        self._flights: SingleFlight[Any] = SingleFlight()

    async def aclose(self) -> None:
        """Cancel the loads in flight."""
        await self._flights.cancel_all()

    def revoke(self, names: Iterable[str], prefix: str | None) -> None:
        """See :meth:`Cache.revoke_flights <thorbis_cache.cache.core.Cache.revoke_flights>`."""
        self._flights.revoke(names, prefix)

    async def read(
        self, rt: SchemaRuntime, key: CacheKey[T], rk: str, loader: Loader[T], ttl: float | None
    ) -> T:
        if ttl is not None:  # refused before anything is loaded or written
            checked_ttl(key.schema.name, ttl)
        try:
            data = await rt.read(rk)
        except WrongRedisTypeError:  # foreign data under our key: a miss; the fill replaces it
            data = None
        except RedisUnavailableError as exc:
            return await self._cache.loaders.degraded(rt.counters, key, loader, exc)
        if data is not None:
            beta = key.schema.early_recompute
            try:
                if beta is None:
                    hit: T = rt.codec.decode_value(data, rk.encode(), key.tenant)
                    rt.counters.hits += 1
                    return hit
                decoded = rt.codec.decode(data, rk.encode(), key.tenant)
            except CorruptEntry as exc:
                if data == ABSENT:
                    rt.counters.negative_hits += 1
                    raise MissingRow(key.schema.name, key.tenant, rk) from None
                await self._cache._drop_corrupt(rt, key, rk, data, exc)
            else:
                rt.counters.hits += 1
                if not should_recompute_early(
                    int(time.time() * 1000), decoded.expires_at_ms, decoded.delta_ms, beta
                ):
                    return decoded.value  # type: ignore[no-any-return]
                rt.counters.early_recomputes += 1
                current: T = decoded.value
                value, _ = await self._flights.do(
                    rk, lambda: self._refresh(rt, key, rk, loader, ttl, current)
                )
                return value  # type: ignore[no-any-return]
        rt.counters.misses += 1
        value, joined = await self._flights.do(rk, lambda: self._fill(rt, key, rk, loader, ttl))
        if joined:
            rt.counters.coalesced += 1
        return value  # type: ignore[no-any-return]

    async def _fill(
        self, rt: SchemaRuntime, key: CacheKey[T], rk: str, loader: Loader[T], ttl: float | None
    ) -> T:
        keys = leases.fill_keys(self._cache, key)
        token = leases.new_token(self._cache)
        lease_ms = int(self._cache.settings.lease_ttl * 1000)
        wait = leases.LeaseWait(self._cache, key, rt.counters)
        while True:
            try:
                reply = await self._cache.store.run(
                    self._cache._scripts.lease_acquire, keys, [token, lease_ms, "miss"]
                )
            except RedisUnavailableError as exc:
                return await self._cache.loaders.degraded(rt.counters, key, loader, exc)
            state = int(reply[0])
            if state == leases.CACHED:
                data: bytes = reply[1]
                if data == ABSENT:
                    rt.counters.negative_hits += 1
                    raise MissingRow(key.schema.name, key.tenant, rk)
                try:
                    return rt.codec.decode_value(data, rk.encode(), key.tenant)  # type: ignore[no-any-return]
                except CorruptEntry as exc:
                    await self._cache._drop_corrupt(rt, key, rk, data, exc)
                    continue
            if state == leases.GRANTED:
                return await self._load_and_fill(rt, key, rk, token, loader, ttl)
            # Another client is loading this key: wait for its value, bounded.
            if not await wait.pause():
                return await self._cache.loaders.call(rt.counters, loader)

    async def _refresh(
        self,
        rt: SchemaRuntime,
        key: CacheKey[T],
        rk: str,
        loader: Loader[T],
        ttl: float | None,
        current: T,
    ) -> T:
        """Early recomputation: only the client that wins the lease recomputes; the
        others keep serving the current value."""
        token = leases.new_token(self._cache)
        if not await leases.take_for_refresh(self._cache, key, token):
            return current
        return await self._load_and_fill(rt, key, rk, token, loader, ttl)

    async def _load_and_fill(
        self,
        rt: SchemaRuntime,
        key: CacheKey[T],
        rk: str,
        token: str,
        loader: Loader[T],
        ttl: float | None,
    ) -> T:
        started = time.perf_counter()
        try:
            value = await self._cache.loaders.call(rt.counters, loader)
            rt.codec.check(value)
        except MissingRow:
            if await leases.write_absent(self._cache, key, token) is False:
                rt.counters.fills_rejected += 1
            raise
        except BaseException:
            # Release our lease at once so waiters take over instead of timing out.
            await leases.release(self._cache, key, token)
            raise
        delta_ms = int((time.perf_counter() - started) * 1000)
        ttl_ms = self._cache.ttl_ms(key.schema, ttl)
        try:
            data = rt.codec.encode(
                value, rk.encode(), key.tenant, self._cache._timing(key.schema, ttl_ms, delta_ms)
            )
        except ValueTooLargeError as exc:
            await leases.give_up_oversized(self._cache, key, token, rt.counters, exc)
            return value
        try:
            written = await leases.write(self._cache, key, token, ttl_ms, data)
        except RedisUnavailableError as exc:
            log.warning("could not write the fill of %s: %s", rk, exc)
            return value
        if not written:
            rt.counters.fills_rejected += 1
            log.debug("fill of %s rejected: invalidated while loading", rk)
        return value
