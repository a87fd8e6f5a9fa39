"""The vertical's warmers: fill a tenant's cache from PostgreSQL ahead of demand.

A warmer yields ``(key, value)`` pairs of this plugin's schemas only. Values follow the
kind of the key's schema (see :func:`thorbis_home_services.writers.write_pair`): the
record for a value or a hash, a mapping member -> score for a sorted set (the whole
set), a mapping member -> ``(longitude, latitude)`` for a geo index (the whole index).
Entities are yielded before the lists that point at them, so a reader who finds an id
in a freshly warmed list also finds its entity.

All queries go through :attr:`WarmContext.fetch` and are tenant-scoped; each warmer
costs a fixed number of round trips, whatever the tenant's size.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from thorbis_cache.declarations import WarmContext, Warmer
from thorbis_cache.keys import CacheKey

from thorbis_home_services import loaders
from thorbis_home_services.models import WorkOrderStatus
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
from thorbis_home_services.scoring import score_of

__all__ = [
    "TOP_CUSTOMERS",
    "customers_warmer",
    "default_warmers",
    "schedule_warmer",
    "service_areas_warmer",
    "work_orders_warmer",
]

Pairs = AsyncIterator[tuple[CacheKey[Any], Any]]

#: How many of a tenant's most valuable customers get their hash, summary and service
#: history warmed (the seed warmed "frequently accessed customers"; value is the
#: database-side proxy for that).
TOP_CUSTOMERS = 200


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def customers_warmer(top: int = TOP_CUSTOMERS) -> Warmer:
    """A warmer of the ``top`` most valuable customers' hashes, summaries and service
    histories, then every customer list (all, active, vip) in full."""

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        best = await loaders.top_customers(ctx.fetch, tenant, top)
        ids = [c.id for c in best]
        for customer in best:
            yield CUSTOMER.key(tenant, customer_id=customer.id), customer
        for summary in await loaders.customer_summaries(ctx.fetch, tenant, ids):
            yield CUSTOMER_SUMMARY.key(tenant, customer_id=summary.customer_id), summary
        histories = await loaders.service_histories(ctx.fetch, tenant, ids)
        for customer_id, series in histories.items():
            yield (
                CUSTOMER_HISTORY.key(tenant, customer_id=customer_id),
                {wo: at.timestamp() for wo, at in series},
            )
        for segment, scores in (await loaders.customer_segments(ctx.fetch, tenant)).items():
            yield CUSTOMER_LIST.key(tenant, segment=segment), scores

    return Warmer(
        "hs.customers",
        produce,
        schemas=(CUSTOMER.name, CUSTOMER_SUMMARY.name, CUSTOMER_HISTORY.name, CUSTOMER_LIST.name),
        description=f"top {top} customers by lifetime value, and the customer lists",
    )


def work_orders_warmer() -> Warmer:
    """A warmer of every open work order and the status lists of the open statuses
    (completed and cancelled lists grow without bound and are not warmed)."""

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        lists: dict[WorkOrderStatus, dict[int, float]] = {
            s: {} for s in WorkOrderStatus if s.is_open
        }
        for order in await loaders.open_work_orders(ctx.fetch, tenant):
            lists[order.status][order.id] = score_of(order)
            yield WORK_ORDER.key(tenant, work_order_id=order.id), order
        for status, scores in lists.items():
            yield WORK_ORDERS_BY_STATUS.key(tenant, status=status), scores

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

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        when = day()
        schedules: dict[int, dict[int, float]] = defaultdict(dict)
        sites: dict[int, tuple[float, float]] = {}
        for order in await loaders.day_appointments(ctx.fetch, tenant, when):
            # The query returns assigned orders only; this guard narrows the type.
            if order.assigned_technician_id is None:
                continue
            schedules[order.assigned_technician_id][order.id] = order.scheduled_at.timestamp()
            sites[order.id] = (order.longitude, order.latitude)
        for technician_id, starts in schedules.items():
            yield TECHNICIAN_SCHEDULE.key(tenant, technician_id=technician_id, day=when), starts
        yield SCHEDULE_GEO.key(tenant, day=when), sites

    return Warmer(
        "hs.schedules",
        produce,
        schemas=(TECHNICIAN_SCHEDULE.name, SCHEDULE_GEO.name),
        description="today's technician schedules and appointment geo index",
    )


def service_areas_warmer() -> Warmer:
    """A warmer of every service area's metrics hash and the geo index of centres."""

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        areas = await loaders.service_area_metrics(ctx.fetch, tenant)
        for area in areas:
            yield SERVICE_AREA.key(tenant, area_id=area.area_id), area
        yield (
            SERVICE_AREA_GEO.key(tenant),
            {a.area_id: (a.center_longitude, a.center_latitude) for a in areas},
        )

    return Warmer(
        "hs.service_areas",
        produce,
        schemas=(SERVICE_AREA.name, SERVICE_AREA_GEO.name),
        description="service area metrics and the geo index of their centres",
    )


def default_warmers() -> tuple[Warmer, ...]:
    """The warmers the plugin registers, with their default settings."""
    return (customers_warmer(), work_orders_warmer(), schedule_warmer(), service_areas_warmer())
