"""A batch's invalidations when one Cluster shard is out of reach: the other shards'
applied now, the rest parked.

A tenant's keys and tags live on one shard of a Cluster. When one master stops
answering, Redis keeps serving the others until the Cluster fails it over
(``cluster-node-timeout`` and an election: 15 s and more by default), or for good when
a shard is lost and the Cluster does not require full coverage. A batch applied as one
failed as a whole there, and the worker held every later batch behind it: every
tenant's cached entries stayed stale, not only the silent shard's. So when a batch
meets an unavailable shard, its invalidations are applied tenant by tenant (each call
answers to its master's breaker; a tenant whose master's breaker is open is not
called at all while another master's is closed), and the changes whose tenants could
not be reached are parked in ``thorbis.parked_changes`` in the batch's transaction
(:func:`~thorbis_cache.postgres.parked.park`), to be applied once their shard answers
(:mod:`~thorbis_cache.invalidation.parked_retry`). The rest commits and the worker
goes on. When no tenant of the batch can be reached, and not because each is on a
master known out of reach while another is not, nothing is parked: the batch fails
as before and the worker waits for Redis (down as a whole, as far as it can tell).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from thorbis_cache.cache.meta_keys import MetaKeys
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.tag_lanes import TagInvalidator, in_lanes, invalidate_tags_of

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

    :raises RedisUnavailableError: no tenant could be reached (unless each is on a
        master whose breaker is open while some master's is not: they are returned, to
        be parked), or Redis is not a Cluster (a single server or a Sentinel group is
        one shard).
    """
    store = cache.store
    if not store.is_cluster or not any(store.breakers.alarmed):
        try:
            if keys:
                await cache.delete(*keys, replicate=replicate)
            await invalidate_tags_of(invalidate_tags, [
                (tenant, sorted(names)) for tenant, names in sorted(tags.items()) if names])
            return {}
        except RedisUnavailableError as exc:
            if not store.is_cluster:
                raise
            first_error: RedisUnavailableError | None = exc
    else:
        first_error = None
    by_tenant: dict[str, list[CacheKey[Any]]] = defaultdict(list)
    for key in keys:
        by_tenant[key.tenant].append(key)
    tenants = sorted(set(by_tenant) | {t for t, names in tags.items() if names})
    if first_error is not None and len(tenants) <= 1:
        raise first_error  # one tenant: tried again, the same call would fail again
    unreached: dict[str, RedisUnavailableError] = {}
    known_away: set[str] = set()  # refused without a call: their master's breaker is open
    index = MetaKeys(cache.settings.prefix).index
    # While some master's breaker is closed, one whose breaker is open is known out of
    # reach: a call let through as its breaker's probe would hold the whole batch for a
    # call's timeout, so its tenants are parked without one, and the parked changes'
    # tries watch it beside the batches (invalidation/parked_retry.py). When every
    # master's is open (Redis down as a whole, or a Cluster refusing every call while
    # it fails a master over), the calls go: their breakers' probes are what finds
    # Redis back (nothing is parked, so nothing else would ask).
    avoid = not store.every_master_suspect()

    async def apply(tenant: str) -> None:
        if avoid and store.breakers.route_suspect(index(tenant)):
            unreached[tenant] = RedisUnavailableError(
                "UNLINK", store.address, "its master's circuit is open")
            known_away.add(tenant)
            return
        try:
            if by_tenant.get(tenant):
                await cache.delete(*by_tenant[tenant], replicate=replicate)
            if tags.get(tenant):
                await invalidate_tags(tenant, sorted(tags[tenant]))
        except RedisUnavailableError as exc:
            unreached[tenant] = exc

    await in_lanes(tenants, apply)  # anything else than an outage is raised
    if tenants and len(unreached) == len(tenants) and len(known_away) < len(tenants):
        # Nothing applied: Redis may be down as a whole, which the worker waits out.
        # Not when each tenant is on a shard known away while another shard is not: a
        # batch of only those (the others' tenants idle) would otherwise fail again and
        # again, and the worker wait for a Redis that answers.
        raise unreached[tenants[0]]
    return unreached
