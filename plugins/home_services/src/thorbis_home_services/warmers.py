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
from typing import Any, cast

from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.plugins.declarations import WarmContext, Warmer
from thorbis_cache.warming import WarmBatch, batch_of

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

Batches = AsyncIterator[WarmBatch]
Entries = Mapping[CacheKey[Any], Any]

#: How many of a tenant's most valuable customers get their hash, summary and service
#: history warmed (the seed warmed "frequently accessed customers"; value is the
#: database-side proxy for that).
TOP_CUSTOMERS = 200


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def customers_warmer(top: int = TOP_CUSTOMERS) -> Warmer:
    """A warmer of the ``top`` most valuable customers' hashes, summaries and service
    histories, then every customer list (all, active, vip) in full."""

    async def produce(ctx: WarmContext) -> Batches:
        tenant, fetch = ctx.tenant, ctx.fetch
        ids = await loaders.top_customer_ids(fetch, tenant, top)

        async def histories(leased: list[int]) -> dict[int, dict[int, float]]:
            found = await loaders.service_histories(fetch, tenant, leased)
            return {c: {wo: at.timestamp() for wo, at in series}
                    for c, series in found.items()}

        async def lists(leased: list[CustomerSegment]) -> dict[CustomerSegment, Any]:
            every = await loaders.customer_segments(fetch, tenant)
            return {s: every[s] for s in leased}

        yield batch_of(CUSTOMER, tenant, ids, lambda c: loaders.customers(fetch, tenant, c),
                       key_of=lambda c: c.id, description=f"top {top} customers")
        yield batch_of(CUSTOMER_SUMMARY, tenant, ids,
                       lambda c: loaders.customer_summaries(fetch, tenant, c),
                       key_of=lambda s: s.customer_id,
                       description=f"top {top} customers' summaries")
        yield batch_of(CUSTOMER_HISTORY, tenant, ids, histories,
                       description=f"top {top} customers' service histories")
        yield batch_of(CUSTOMER_LIST, tenant, CustomerSegment, lists,
                       description="customer lists")

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
        yield batch_of(WORK_ORDER, tenant, ids, lambda o: loaders.work_orders(fetch, tenant, o),
                       key_of=lambda o: o.id, description="open work orders")
        yield batch_of(WORK_ORDERS_BY_STATUS, tenant, [s for s in WorkOrderStatus if s.is_open],
                       lambda s: loaders.work_order_lists(fetch, tenant, s),
                       description="open status lists")

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
            keys = {cast(int, k.params["technician_id"]): k for k in leased}
            found = await loaders.technician_schedules(fetch, tenant, when, list(keys))
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


        async def centres(leased: Sequence[CacheKey[Any]]) -> Entries:
            # One key: the tenant's index.
            return dict.fromkeys(leased, await loaders.service_area_geo(fetch, tenant))

        yield batch_of(SERVICE_AREA, tenant, ids,
                       lambda a: loaders.service_areas(fetch, tenant, a),
                       key_of=lambda a: a.area_id, description="service area metrics")
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
