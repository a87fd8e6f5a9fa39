"""The vertical's named reads (cache patterns), each ``async (cache, tenant, **kwargs)``.

Every pattern takes an optional keyword ``fetch`` (:data:`thorbis_cache.plugins.declarations.Fetch`,
``async (sql, *args) -> rows``, e.g. an asyncpg pool's ``fetch``):

* **with** ``fetch``, the pattern reads *through* the cache: a structure or entity that
  is not cached is loaded whole with the plugin's loader
  (:mod:`thorbis_home_services.loaders`), cached under the key's fill lease (a load that
  raced with an invalidation is answered but not cached), and the answer comes from it;
* **without** it, the pattern answers from the cache only: from what warmers, writers
  and earlier read-throughs stored, and empty results for what is not cached.

A pattern reads several entries through at once (the status lists, the orders they
name, the metrics of nearby areas), so ``fetch`` may be called concurrently: pass a
pool's ``fetch``, not one connection's.

Each is registered by :func:`thorbis_home_services.plugin.register_cache_patterns` under
the name in :data:`PATTERNS`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from thorbis_cache.cache.core import Cache
from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins.declarations import CachePattern, Fetch

from thorbis_home_services import loaders
from thorbis_home_services.models import (
    CustomerSegment,
    NearbyArea,
    RankedWorkOrder,
    ServiceAreaMetrics,
    WorkOrder,
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


async def _top_of_status(
    cache: Cache, tenant: str, status: WorkOrderStatus, limit: int, fetch: Fetch | None
) -> list[tuple[int, float]]:
    zset = cache.zset(WORK_ORDERS_BY_STATUS.key(tenant, status=status))
    if fetch is None:
        return await zset.top(limit)
    return await zset.top(
        limit, loader=lambda: loaders.work_orders_by_status(fetch, tenant, status))


async def _work_order(cache: Cache, tenant: str, work_order_id: int,
                      fetch: Fetch) -> WorkOrder | None:
    """A work order through the cache; None when the row is gone (deleted since the list
    that named it was cached)."""
    try:
        return await cache.get_or_load(
            WORK_ORDER.key(tenant, work_order_id=work_order_id),
            lambda: loaders.work_order(fetch, tenant, work_order_id))
    except MissingRow:
        return None


async def high_priority_work_orders(
    cache: Cache,
    tenant: str,
    *,
    limit: int = 50,
    statuses: Sequence[WorkOrderStatus] = ACTIONABLE_STATUSES,
    fetch: Fetch | None = None,
) -> list[RankedWorkOrder]:
    """The ``limit`` work orders of highest score across several status lists, highest
    first, with their orders (one ``MGET``; with ``fetch``, the orders not cached are
    read through).

    The seed concatenated each list's top ``limit + 1`` (``ZREVRANGE 0 limit`` is
    inclusive) without merging; here each list's top ``limit`` are merged by score (ties
    by id), an id found in two lists (a status change caught mid-way) counts once at its
    higher score, and the result is cut to ``limit``.

    :param limit: how many to return (>= 0).
    :param statuses: the status lists to merge.
    :param fetch: read through: load the lists and orders that are not cached.
    :returns: the ranked orders; an order is None when it is not cached (without
        ``fetch``) or no longer exists (with it).
    :raises ValueError: ``limit`` is negative.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0 or not statuses:
        return []
    tops = await asyncio.gather(
        *(_top_of_status(cache, tenant, s, limit, fetch) for s in statuses)
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
    if fetch is not None:
        missing = [i for i, order in enumerate(orders) if order is None]
        loaded = await asyncio.gather(
            *(_work_order(cache, tenant, ranked[i][0], fetch) for i in missing)
        )
        for i, order in zip(missing, loaded):
            orders[i] = order
    return [
        RankedWorkOrder(wo, status, score, order)
        for (wo, (score, status)), order in zip(ranked, orders)
    ]


async def technician_day(
    cache: Cache, tenant: str, *, technician_id: int, day: dt.date,
    fetch: Fetch | None = None,
) -> list[tuple[int, dt.datetime]]:
    """A technician's appointments of a UTC day as ``(work order id, start)``, by start.

    :param fetch: read through: load the schedule when it is not cached.
    """
    zset = cache.zset(TECHNICIAN_SCHEDULE.key(tenant, technician_id=technician_id, day=day))
    if fetch is None:
        starts = await zset.range_by_score()
    else:
        starts = await zset.range_by_score(
            loader=lambda: loaders.technician_schedule(fetch, tenant, technician_id, day))
    return [(wo, _utc(start)) for wo, start in starts]


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
    fetch: Fetch | None = None,
) -> list[tuple[int, float]]:
    """Appointments of a UTC day within ``radius_m`` metres of a point, nearest first, as
    ``(work order id, distance in metres)``.

    :param technician_id: only this technician's appointments (those in their schedule
        of the day), e.g. to fit an emergency between their stops.
    :param count: at most this many (after the technician filter).
    :param fetch: read through: load the day's index (and the technician's schedule)
        when not cached.
    """
    geo = cache.geo(SCHEDULE_GEO.key(tenant, day=day))

    async def within(n: int | None) -> list[tuple[int, float]]:
        if fetch is None:
            return await geo.within(longitude, latitude, radius_m, count=n)
        return await geo.within(longitude, latitude, radius_m, count=n,
                                loader=lambda: loaders.schedule_geo(fetch, tenant, day))

    if technician_id is None:
        return await within(count)
    schedule = await technician_day(cache, tenant, technician_id=technician_id, day=day,
                                    fetch=fetch)
    mine = {wo for wo, _ in schedule}
    if not mine:
        return []
    found = [(wo, d) for wo, d in await within(None) if wo in mine]
    return found if count is None else found[:count]


async def _history(
    cache: Cache, tenant: str, customer_id: int, fetch: Fetch | None, n: int | None
) -> list[tuple[int, float]]:
    """The service time series, newest first (the last ``n``; all with None)."""
    zset = cache.zset(CUSTOMER_HISTORY.key(tenant, customer_id=customer_id))
    if fetch is None:
        return await zset.range_by_score(desc=True, count=n)
    return await zset.range_by_score(
        desc=True, count=n, loader=lambda: loaders.service_history(fetch, tenant, customer_id))


async def recent_services(
    cache: Cache, tenant: str, *, customer_id: int, n: int = 10, fetch: Fetch | None = None
) -> list[tuple[int, dt.datetime]]:
    """A customer's last ``n`` completed work orders as ``(id, completed_at)``, newest
    first (from the service time series).

    :param fetch: read through: load the time series when it is not cached.
    :raises ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    return [(wo, _utc(at)) for wo, at in await _history(cache, tenant, customer_id, fetch, n)]


async def predicted_next_service(
    cache: Cache, tenant: str, *, customer_id: int, fetch: Fetch | None = None
) -> NextService | None:
    """The seed's "predicted next service" from the service time series (see
    :mod:`thorbis_home_services.predict`); None with fewer than two services (cached,
    or, with ``fetch``, in the database).

    :param fetch: read through: load the time series when it is not cached.
    """
    series = await _history(cache, tenant, customer_id, fetch, None)
    return predict_next_service(_utc(at) for _, at in series)


async def _area_metrics(cache: Cache, tenant: str, area_id: int,
                        fetch: Fetch | None) -> ServiceAreaMetrics | None:
    entity = cache.hash(SERVICE_AREA.key(tenant, area_id=area_id))
    if fetch is None:
        return await entity.get()
    try:
        return await entity.get_or_load(lambda: loaders.service_area(fetch, tenant, area_id))
    except MissingRow:
        # An area added since the metrics view's last refresh has a centre, no metrics.
        return None


async def nearest_service_areas(
    cache: Cache,
    tenant: str,
    *,
    longitude: float,
    latitude: float,
    radius_m: float,
    count: int = 5,
    fetch: Fetch | None = None,
) -> list[NearbyArea]:
    """The ``count`` service areas whose centre is nearest to a point (within
    ``radius_m``), nearest first, with their metrics.

    :param fetch: read through: load the index of centres and the metrics hashes that
        are not cached.
    :returns: the areas; an area's metrics are None when not cached (without ``fetch``)
        or not in the metrics view yet (with it).
    """
    geo = cache.geo(SERVICE_AREA_GEO.key(tenant))
    if fetch is None:
        near = await geo.within(longitude, latitude, radius_m, count=count)
    else:
        near = await geo.within(longitude, latitude, radius_m, count=count,
                                loader=lambda: loaders.service_area_geo(fetch, tenant))
    metrics = await asyncio.gather(
        *(_area_metrics(cache, tenant, area, fetch) for area, _ in near)
    )
    return [NearbyArea(area, d, m) for (area, d), m in zip(near, metrics)]


async def top_customers(
    cache: Cache,
    tenant: str,
    *,
    segment: CustomerSegment = CustomerSegment.ALL,
    n: int = 20,
    fetch: Fetch | None = None,
) -> list[tuple[int, float]]:
    """The ``n`` customers of a segment with the highest lifetime value, as
    ``(customer id, lifetime value)``, highest first.

    :param fetch: read through: load the list when it is not cached.
    """
    zset = cache.zset(CUSTOMER_LIST.key(tenant, segment=segment))
    if fetch is None:
        return await zset.top(n)
    return await zset.top(n, loader=lambda: loaders.customer_list(fetch, tenant, segment))


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
