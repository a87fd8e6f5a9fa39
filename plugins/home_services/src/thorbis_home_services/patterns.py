"""The vertical's named reads (cache patterns), each ``async (cache, tenant, **kwargs)``.

Patterns read the cache only: they answer from what the warmers and writers stored, and
return empty results for structures that are not cached. Each is registered by
:func:`thorbis_home_services.plugin.register_cache_patterns` under the name in
:data:`PATTERNS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from thorbis_cache.cache import Cache
from thorbis_cache.declarations import CachePattern

from thorbis_home_services.models import (
    CustomerSegment,
    NearbyArea,
    RankedWorkOrder,
    WorkOrderStatus,
)
from thorbis_home_services.predict import NextService, predict_next_service
from thorbis_home_services.schemas import (
    CUSTOMER_HISTORY,
    CUSTOMER_LIST,
    SCHEDULE_GEO,
    SERVICE_AREA,
    SERVICE_AREA_GEO,
    TECHNICIAN_SCHEDULE,
    WORK_ORDER,
    WORK_ORDERS_BY_STATUS,
)

__all__ = [
    "ACTIONABLE_STATUSES",
    "PATTERNS",
    "appointments_near",
    "high_priority_work_orders",
    "nearest_service_areas",
    "predicted_next_service",
    "recent_services",
    "technician_day",
    "top_customers",
]

#: The lists the high-priority query merges by default: open work that can be acted on
#: (the seed merged its "emergency", "urgent" and "scheduled" lists).
ACTIONABLE_STATUSES: tuple[WorkOrderStatus, ...] = (
    WorkOrderStatus.PENDING,
    WorkOrderStatus.SCHEDULED,
    WorkOrderStatus.DISPATCHED,
    WorkOrderStatus.IN_PROGRESS,
)


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


async def high_priority_work_orders(
    cache: Cache,
    tenant: str,
    *,
    limit: int = 50,
    statuses: Sequence[WorkOrderStatus] = ACTIONABLE_STATUSES,
) -> list[RankedWorkOrder]:
    """The ``limit`` work orders of highest score across several status lists, highest
    first, with their cached orders (one ``MGET``).

    The seed concatenated each list's top ``limit + 1`` (``ZREVRANGE 0 limit`` is
    inclusive) without merging; here each list's top ``limit`` are merged by score (ties
    by id), an id found in two lists (a status change caught mid-way) counts once at its
    higher score, and the result is cut to ``limit``.

    :param limit: how many to return (>= 0).
    :param statuses: the status lists to merge.
    :raises ValueError: ``limit`` is negative.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0 or not statuses:
        return []
    tops = await asyncio.gather(
        *(cache.zset(WORK_ORDERS_BY_STATUS.key(tenant, status=s)).top(limit) for s in statuses)
    )
    best: dict[int, tuple[float, WorkOrderStatus]] = {}
    for status, members in zip(statuses, tops):
        for work_order_id, score in members:
            seen = best.get(work_order_id)
            if seen is None or score > seen[0]:
                best[work_order_id] = (score, status)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
    orders = await cache.get_many(
        [WORK_ORDER.key(tenant, work_order_id=wo) for wo, _ in ranked]
    )
    return [
        RankedWorkOrder(wo, status, score, order)
        for (wo, (score, status)), order in zip(ranked, orders)
    ]


async def technician_day(
    cache: Cache, tenant: str, *, technician_id: int, day: dt.date
) -> list[tuple[int, dt.datetime]]:
    """A technician's appointments of a UTC day as ``(work order id, start)``, by start."""
    key = TECHNICIAN_SCHEDULE.key(tenant, technician_id=technician_id, day=day)
    return [(wo, _utc(start)) for wo, start in await cache.zset(key).range_by_score()]


async def appointments_near(
    cache: Cache,
    tenant: str,
    *,
    day: dt.date,
    longitude: float,
    latitude: float,
    radius_m: float,
    technician_id: int | None = None,
    count: int | None = None,
) -> list[tuple[int, float]]:
    """Appointments of a UTC day within ``radius_m`` metres of a point, nearest first, as
    ``(work order id, distance in metres)``.

    :param technician_id: only this technician's appointments (those in their cached
        schedule of the day), e.g. to fit an emergency between their stops.
    :param count: at most this many (after the technician filter).
    """
    geo = cache.geo(SCHEDULE_GEO.key(tenant, day=day))
    if technician_id is None:
        return await geo.within(longitude, latitude, radius_m, count=count)
    schedule = await technician_day(cache, tenant, technician_id=technician_id, day=day)
    mine = {wo for wo, _ in schedule}
    if not mine:
        return []
    found = [(wo, d) for wo, d in await geo.within(longitude, latitude, radius_m) if wo in mine]
    return found if count is None else found[:count]


async def recent_services(
    cache: Cache, tenant: str, *, customer_id: int, n: int = 10
) -> list[tuple[int, dt.datetime]]:
    """A customer's last ``n`` completed work orders as ``(id, completed_at)``, newest
    first (from the service time series).

    :raises ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    key = CUSTOMER_HISTORY.key(tenant, customer_id=customer_id)
    return [(wo, _utc(at)) for wo, at in await cache.zset(key).top(n)]


async def predicted_next_service(
    cache: Cache, tenant: str, *, customer_id: int
) -> NextService | None:
    """The seed's "predicted next service" from the cached service time series (see
    :mod:`thorbis_home_services.predict`); None with fewer than two services cached."""
    key = CUSTOMER_HISTORY.key(tenant, customer_id=customer_id)
    series = await cache.zset(key).range_by_score()
    return predict_next_service(_utc(at) for _, at in series)


async def nearest_service_areas(
    cache: Cache,
    tenant: str,
    *,
    longitude: float,
    latitude: float,
    radius_m: float,
    count: int = 5,
) -> list[NearbyArea]:
    """The ``count`` service areas whose centre is nearest to a point (within
    ``radius_m``), nearest first, with their cached metrics."""
    near = await cache.geo(SERVICE_AREA_GEO.key(tenant)).within(
        longitude, latitude, radius_m, count=count
    )
    metrics = await asyncio.gather(
        *(cache.hash(SERVICE_AREA.key(tenant, area_id=area)).get() for area, _ in near)
    )
    return [NearbyArea(area, d, m) for (area, d), m in zip(near, metrics)]


async def top_customers(
    cache: Cache,
    tenant: str,
    *,
    segment: CustomerSegment = CustomerSegment.ALL,
    n: int = 20,
) -> list[tuple[int, float]]:
    """The ``n`` customers of a segment with the highest lifetime value, as
    ``(customer id, lifetime value)``, highest first."""
    return await cache.zset(CUSTOMER_LIST.key(tenant, segment=segment)).top(n)


#: The registered patterns.
PATTERNS: tuple[CachePattern, ...] = (
    CachePattern(
        "hs.high_priority_work_orders",
        high_priority_work_orders,
        schemas=(WORK_ORDERS_BY_STATUS.name, WORK_ORDER.name),
        description="top work orders by the seed's priority score across status lists",
    ),
    CachePattern(
        "hs.technician_day",
        technician_day,
        schemas=(TECHNICIAN_SCHEDULE.name,),
        description="a technician's appointments of a day by start time",
    ),
    CachePattern(
        "hs.appointments_near",
        appointments_near,
        schemas=(SCHEDULE_GEO.name, TECHNICIAN_SCHEDULE.name),
        description="a day's appointments within a radius, nearest first",
    ),
    CachePattern(
        "hs.recent_services",
        recent_services,
        schemas=(CUSTOMER_HISTORY.name,),
        description="a customer's last N completed services",
    ),
    CachePattern(
        "hs.predicted_next_service",
        predicted_next_service,
        schemas=(CUSTOMER_HISTORY.name,),
        description="last service + median interval between services",
    ),
    CachePattern(
        "hs.nearest_service_areas",
        nearest_service_areas,
        schemas=(SERVICE_AREA_GEO.name, SERVICE_AREA.name),
        description="service areas nearest to a point, with their metrics",
    ),
    CachePattern(
        "hs.top_customers",
        top_customers,
        schemas=(CUSTOMER_LIST.name,),
        description="customers of a segment by lifetime value",
    ),
)
