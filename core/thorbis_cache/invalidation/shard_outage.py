"""A batch's invalidations when one Cluster shard is out of reach: the other shards'
applied now, the rest parked.

A tenant's keys and tags live on one shard of a Cluster. When one master stops
answering, Redis keeps serving the others until the Cluster fails it over
(``cluster-node-timeout`` and an election: 15 s and more by default), or for good when
a shard is lost and the Cluster does not require full coverage. A batch applied as one
failed as a whole there, and the worker held every later batch behind it: every
tenant's cached entries stayed stale, not only the silent shard's. So when a batch
meets an unavailable shard, its invalidations are applied tenant by tenant (each call
answers to its master's breaker, so a silent shard's fail at once after the first
timeouts), and the changes whose tenants could not be reached are parked: put back in
``thorbis.outbox`` in the batch's transaction (:func:`~thorbis_cache.postgres.outbox.park`),
to be applied by a later batch once their shard answers. The rest commits and the
worker goes on. When no tenant of the batch can be reached, nothing is parked: the
batch fails as before and the worker waits for Redis.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.tag_lanes import TAG_LANES, TagInvalidator, invalidate_tags_of

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.cache.keys import CacheKey

__all__ = ["apply_reachable"]


async def apply_reachable(cache: Cache, keys: Sequence[CacheKey[Any]],
                          tags: Mapping[str, set[str]], invalidate_tags: TagInvalidator, *,
                          replicate: bool) -> dict[str, RedisUnavailableError]:
    """Delete ``keys`` and invalidate each tenant's ``tags``; the tenants whose shard
    could not be reached, with the error each met (empty: everything applied).

    Off a Cluster, or while every master's breaker is closed, it is one delete and the
    tags in lanes, as a batch always was; only when that meets an unavailable server on
    a Cluster (or a master's breaker is already open) is it done again tenant by
    tenant. Deletes and tag invalidations are idempotent, so what the first try applied
    is simply applied again.

    :raises RedisUnavailableError: no tenant could be reached, or Redis is not a
        Cluster (a single server or a Sentinel group is one shard).
    """
    store = cache.store
    if not store.is_cluster or not any(store.breakers.alarmed):
        try:
            if keys:
                await cache.delete(*keys, replicate=replicate)
            await invalidate_tags_of(invalidate_tags, [
                (tenant, sorted(names)) for tenant, names in sorted(tags.items()) if names])
            return {}
        except RedisUnavailableError:
            if not store.is_cluster or len({k.tenant for k in keys} | set(tags)) <= 1:
                raise  # one shard, or one tenant: tried again, the same call would fail
    by_tenant: dict[str, list[CacheKey[Any]]] = defaultdict(list)
    for key in keys:
        by_tenant[key.tenant].append(key)
    tenants = sorted(set(by_tenant) | {t for t, names in tags.items() if names})
    unreached: dict[str, RedisUnavailableError] = {}
    queue = iter(tenants)  # shared: a lane takes the next tenant when it is free

    async def lane() -> None:
        for tenant in queue:
            try:
                if by_tenant.get(tenant):
                    await cache.delete(*by_tenant[tenant], replicate=replicate)
                if tags.get(tenant):
                    await invalidate_tags(tenant, sorted(tags[tenant]))
            except RedisUnavailableError as exc:
                unreached[tenant] = exc

    lanes = [asyncio.ensure_future(lane()) for _ in range(min(TAG_LANES, len(tenants)))]
    try:
        await asyncio.gather(*lanes)
    finally:  # anything else than an outage: the lanes still running are cancelled
        for running in lanes:
            running.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
    if tenants and len(unreached) == len(tenants):
        raise unreached[tenants[0]]
    return unreached
