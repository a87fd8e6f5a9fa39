"""Writes the vertical's cached structures: what the seed's ``cache*`` methods did.

Each write goes through the core's typed structures, so every key keeps its tenant hash
tag, its TTL (refreshed atomically with the write) and, for hashes, its version. A list
is written with ``replace=True``, which swaps its whole content in one atomic script:
the seed's ``DEL`` + ``ZADD`` pipeline let readers see an empty list in between.

These are for a writer that holds the truth (it just committed the rows it writes): each
write also revokes any read-through fill of the same key in flight, so an older load
cannot overwrite it. A reader that does not hold the truth reads through instead
(:mod:`thorbis_home_services.loaders`, the patterns' ``fetch=``), and warmers fill under
leases (:mod:`thorbis_home_services.warmers`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping

from thorbis_cache.cache.core import Cache

from thorbis_home_services.models import (
    Customer,
    CustomerSegment,
    ServiceAreaMetrics,
    WorkOrder,
    WorkOrderStatus,
)
from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    CUSTOMER_LIST,
    SCHEDULE_GEO,
    SERVICE_AREA,
    SERVICE_AREA_GEO,
    TECHNICIAN_SCHEDULE,
    WORK_ORDER,
    WORK_ORDERS_BY_STATUS,
)
from thorbis_home_services.scoring import score_of

__all__ = [
    "store_customer",
    "store_customer_list",
    "store_day_appointments",
    "store_service_areas",
    "store_service_history",
    "store_work_orders_by_status",
]


async def store_customer(cache: Cache, tenant: str, customer: Customer) -> int:
    """Cache a customer's hash (whole entity); returns its new version."""
    return await cache.hash(CUSTOMER.key(tenant, customer_id=customer.id)).replace(customer)


async def store_customer_list(
    cache: Cache, tenant: str, segment: CustomerSegment, scores: Mapping[int, float]
) -> None:
    """Replace a customer list: customer id -> lifetime value."""
    await cache.zset(CUSTOMER_LIST.key(tenant, segment=segment)).add(scores, replace=True)


async def store_work_orders_by_status(
    cache: Cache, tenant: str, status: WorkOrderStatus, orders: Iterable[WorkOrder]
) -> int:
    """Replace the list of ``status`` with ``orders``, scored by
    :func:`~thorbis_home_services.scoring.work_order_score`, and cache each order.

    :returns: how many orders the list now holds.
    :raises ValueError: an order is not of ``status`` (it would sit in the wrong list).
    """
    orders = list(orders)
    wrong = [o.id for o in orders if o.status is not status]
    if wrong:
        raise ValueError(f"work orders {wrong[:10]} are not {status.value!r}")
    # Orders first: a reader that finds an id in the list then finds its order.
    await asyncio.gather(
        *(cache.set(WORK_ORDER.key(tenant, work_order_id=o.id), o) for o in orders)
    )
    key = WORK_ORDERS_BY_STATUS.key(tenant, status=status)
    await cache.zset(key).add({o.id: score_of(o) for o in orders}, replace=True)
    return len(orders)


async def store_day_appointments(
    cache: Cache, tenant: str, day: dt.date, orders: Iterable[WorkOrder]
) -> dict[int, int]:
    """Cache one UTC day of appointments: each technician's schedule (work order ids by
    start time) and the day's geo index of job sites.

    :param orders: the assigned work orders scheduled on ``day``; the geo index is
        replaced by exactly these, and so is the schedule of every technician among them.
    :returns: technician id -> number of appointments.
    :raises ValueError: an order is unassigned or scheduled on another day.
    """
    by_technician: dict[int, dict[int, float]] = defaultdict(dict)
    sites: dict[int, tuple[float, float]] = {}
    for order in orders:
        technician = order.assigned_technician_id
        if technician is None:
            raise ValueError(f"work order {order.id} has no technician")
        if order.scheduled_at.astimezone(dt.UTC).date() != day:
            raise ValueError(f"work order {order.id} is not scheduled on {day}")
        by_technician[technician][order.id] = order.scheduled_at.timestamp()
        sites[order.id] = (order.longitude, order.latitude)
    await asyncio.gather(
        *(
            cache.zset(TECHNICIAN_SCHEDULE.key(tenant, technician_id=t, day=day)).add(
                starts, replace=True
            )
            for t, starts in by_technician.items()
        )
    )
    await cache.geo(SCHEDULE_GEO.key(tenant, day=day)).add(sites, replace=True)
    return {t: len(starts) for t, starts in by_technician.items()}


async def store_service_history(
    cache: Cache, tenant: str, customer_id: int, completions: Iterable[tuple[int, dt.datetime]]
) -> None:
    """Replace a customer's service time series: ``(work order id, completed_at)``."""
    series = {wo: at.timestamp() for wo, at in completions}
    await cache.zset(CUSTOMER_HISTORY.key(tenant, customer_id=customer_id)).add(
        series, replace=True
    )


async def store_service_areas(
    cache: Cache, tenant: str, areas: Iterable[ServiceAreaMetrics]
) -> int:
    """Cache every area's metrics hash and replace the geo index of area centres.

    :returns: the number of areas.
    """
    areas = list(areas)
    await asyncio.gather(
        *(cache.hash(SERVICE_AREA.key(tenant, area_id=a.area_id)).replace(a) for a in areas)
    )
    centres = {a.area_id: (a.center_longitude, a.center_latitude) for a in areas}
    await cache.geo(SERVICE_AREA_GEO.key(tenant)).add(centres, replace=True)
    return len(areas)

