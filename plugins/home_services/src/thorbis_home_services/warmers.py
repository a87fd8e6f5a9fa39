"""The vertical's warmers: fill a tenant's cache from PostgreSQL ahead of demand.

A warmer yields :class:`~thorbis_cache.warming.WarmBatch` es of this plugin's keys, and
:func:`thorbis_cache.warming.warm` runs each one: it takes the fill lease of every key
not cached yet, *then* calls the batch's load with the leased keys, and writes each entry
under its lease. So each warmer first runs a cheap query for the ids it wants to warm
(ids only), and each batch's load reads the rows of the keys it is given, in one query,
after the leases: a change that commits meanwhile revokes its key's lease, and the warm
never writes the row it read before that change.

Entries follow their schema's kind: the record for a value or a hash, the whole set as
member -> score for a sorted set, the whole index as member -> ``(longitude, latitude)``
for a geo index. A leased key the load does not return is an absent row (cached as
absent for entities with ``negative_ttl``: a customer deleted between the ids query and
the load). Entity batches are yielded before the lists that point at them, so a reader
who finds an id in a freshly warmed list also finds its entity.

All queries go through :attr:`WarmContext.fetch` and are tenant-scoped; each warmer
costs a fixed number of round trips, whatever the tenant's size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from thorbis_cache.declarations import WarmContext, Warmer
from thorbis_cache.keys import CacheKey
from thorbis_cache.warming import WarmBatch

from thorbis_home_services import loaders
from thorbis_home_services.models import CustomerSegment, WorkOrderStatus
from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    CUSTOMER_LIST,
    CUSTOMER_SUMMARY,
    SCHEDULE_GEO,
    SERVICE_AREA,
    SERVICE_AREA_GEO,
    TECHNICIAN_SCHEDULE,
    WORK_ORDER,
    WORK_ORDERS_BY_STATUS,
)

__all__ = [
    "TOP_CUSTOMERS",
    "customers_warmer",
    "default_warmers",
    "schedule_warmer",
    "service_areas_warmer",
    "work_orders_warmer",
]

P = TypeVar("P")

Batches = AsyncIterator[WarmBatch]
Entries = Mapping[CacheKey[Any], Any]

#: How many of a tenant's most valuable customers get their hash, summary and service
#: history warmed (the seed warmed "frequently accessed customers"; value is the
#: database-side proxy for that).
TOP_CUSTOMERS = 200


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _by_param(keys: Sequence[CacheKey[Any]], name: str, kind: type[P]) -> dict[P, CacheKey[Any]]:
    """The leased ``keys`` by the value of their parameter ``name``.

    :raises TypeError: a key's parameter is not a ``kind`` (a key of another schema).
    """
    out: dict[P, CacheKey[Any]] = {}
    for key in keys:
        value = key.params.get(name)
        if not isinstance(value, kind):
            raise TypeError(f"key {key.body!r} has no {kind.__name__} parameter {name!r}")
        out[value] = key
    return out


def customers_warmer(top: int = TOP_CUSTOMERS) -> Warmer:
    """A warmer of the ``top`` most valuable customers' hashes, summaries and service
    histories, then every customer list (all, active, vip) in full."""

    async def produce(ctx: WarmContext) -> Batches:
        tenant, fetch = ctx.tenant, ctx.fetch
        ids = await loaders.top_customer_ids(fetch, tenant, top)

        async def customers(leased: Sequence[CacheKey[Any]]) -> Entries:
            keys = _by_param(leased, "customer_id", int)
            return {keys[c.id]: c for c in await loaders.customers(fetch, tenant, keys)}

        async def summaries(leased: Sequence[CacheKey[Any]]) -> Entries:
            keys = _by_param(leased, "customer_id", int)
            found = await loaders.customer_summaries(fetch, tenant, keys)
            return {keys[s.customer_id]: s for s in found}

        async def histories(leased: Sequence[CacheKey[Any]]) -> Entries:
            keys = _by_param(leased, "customer_id", int)
            found = await loaders.service_histories(fetch, tenant, keys)
            return {keys[c]: {wo: at.timestamp() for wo, at in series}
                    for c, series in found.items()}

        async def lists(leased: Sequence[CacheKey[Any]]) -> Entries:
            every = await loaders.customer_segments(fetch, tenant)
            return {key: every[s] for s, key in _by_param(leased, "segment",
                                                          CustomerSegment).items()}

        yield WarmBatch([CUSTOMER.key(tenant, customer_id=c) for c in ids], customers,
                        f"top {top} customers")
        yield WarmBatch([CUSTOMER_SUMMARY.key(tenant, customer_id=c) for c in ids], summaries,
                        f"top {top} customers' summaries")
        yield WarmBatch([CUSTOMER_HISTORY.key(tenant, customer_id=c) for c in ids], histories,
                        f"top {top} customers' service histories")
        yield WarmBatch([CUSTOMER_LIST.key(tenant, segment=s) for s in CustomerSegment], lists,
                        "customer lists")

    return Warmer(
        "hs.customers",
        produce,
        schemas=(CUSTOMER.name, CUSTOMER_SUMMARY.name, CUSTOMER_HISTORY.name, CUSTOMER_LIST.name),
        description=f"top {top} customers by lifetime value, and the customer lists",
    )


def work_orders_warmer() -> Warmer:
    """A warmer of every open work order and the status lists of the open statuses
    (completed and cancelled lists grow without bound and are not warmed)."""

    async def produce(ctx: WarmContext) -> Batches:
        tenant, fetch = ctx.tenant, ctx.fetch
        ids = await loaders.open_work_order_ids(fetch, tenant)

        async def orders(leased: Sequence[CacheKey[Any]]) -> Entries:
            keys = _by_param(leased, "work_order_id", int)
            return {keys[o.id]: o for o in await loaders.work_orders(fetch, tenant, keys)}

        async def lists(leased: Sequence[CacheKey[Any]]) -> Entries:
            keys = _by_param(leased, "status", WorkOrderStatus)
            found = await loaders.work_order_lists(fetch, tenant, keys)
            return {keys[status]: scores for status, scores in found.items()}

        yield WarmBatch([WORK_ORDER.key(tenant, work_order_id=o) for o in ids], orders,
                        "open work orders")
        open_statuses = [s for s in WorkOrderStatus if s.is_open]
        yield WarmBatch([WORK_ORDERS_BY_STATUS.key(tenant, status=s) for s in open_statuses],
                        lists, "open status lists")

    return Warmer(
        "hs.work_orders",
        produce,
        schemas=(WORK_ORDER.name, WORK_ORDERS_BY_STATUS.name),
        description="open work orders and their status lists",
    )


def schedule_warmer(day: Callable[[], dt.date] = _utc_today) -> Warmer:
    """A warmer of one UTC day's technician schedules and appointment geo index.

    :param day: which day to warm, asked at each run (default: today in UTC).
    """

    async def produce(ctx: WarmContext) -> Batches:
        tenant, fetch = ctx.tenant, ctx.fetch
        when = day()
        technicians = await loaders.day_technician_ids(fetch, tenant, when)

        async def schedules(leased: Sequence[CacheKey[Any]]) -> Entries:
            keys = _by_param(leased, "technician_id", int)
            found = await loaders.technician_schedules(fetch, tenant, when, keys)
            # A technician whose appointments went since the ids query has an empty day.
            return {keys[t]: starts for t, starts in found.items()}

        async def sites(leased: Sequence[CacheKey[Any]]) -> Entries:
            # One key: the day's index.
            return dict.fromkeys(leased, await loaders.schedule_geo(fetch, tenant, when))

        yield WarmBatch(
            [TECHNICIAN_SCHEDULE.key(tenant, technician_id=t, day=when) for t in technicians],
            schedules, f"technician schedules of {when}")
        yield WarmBatch([SCHEDULE_GEO.key(tenant, day=when)], sites, f"appointments of {when}")

    return Warmer(
        "hs.schedules",
        produce,
        schemas=(TECHNICIAN_SCHEDULE.name, SCHEDULE_GEO.name),
        description="today's technician schedules and appointment geo index",
    )


def service_areas_warmer() -> Warmer:
    """A warmer of every service area's metrics hash and the geo index of centres."""

    async def produce(ctx: WarmContext) -> Batches:
        tenant, fetch = ctx.tenant, ctx.fetch
        ids = await loaders.service_area_ids(fetch, tenant)

        async def areas(leased: Sequence[CacheKey[Any]]) -> Entries:
            keys = _by_param(leased, "area_id", int)
            found = await loaders.service_areas(fetch, tenant, keys)
            return {keys[a.area_id]: a for a in found}

        async def centres(leased: Sequence[CacheKey[Any]]) -> Entries:
            # One key: the tenant's index.
            return dict.fromkeys(leased, await loaders.service_area_geo(fetch, tenant))

        yield WarmBatch([SERVICE_AREA.key(tenant, area_id=a) for a in ids], areas,
                        "service area metrics")
        yield WarmBatch([SERVICE_AREA_GEO.key(tenant)], centres, "service area centres")

    return Warmer(
        "hs.service_areas",
        produce,
        schemas=(SERVICE_AREA.name, SERVICE_AREA_GEO.name),
        description="service area metrics and the geo index of their centres",
    )


def default_warmers() -> tuple[Warmer, ...]:
    """The warmers the plugin registers, with their default settings."""
    return (customers_warmer(), work_orders_warmer(), schedule_warmer(), service_areas_warmer())
