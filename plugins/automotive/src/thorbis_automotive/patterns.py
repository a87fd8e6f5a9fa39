"""The vertical's named reads (cache patterns), each ``async (cache, tenant, **kwargs)``.

Patterns read the cache only: they answer from what warmers, writers and read-through
loads stored, and return None or empty results for what is not cached. Set queries are
``ZRANGE ... BYSCORE`` with a ``LIMIT`` (``O(log N + M)``), never scans.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from thorbis_cache.cache import Cache
from thorbis_cache.declarations import CachePattern

from thorbis_automotive.labor import estimated_amount
from thorbis_automotive.models import (
    BayBoard,
    LaborQuote,
    LowStockPart,
    PartDemand,
    ScheduledService,
    VehicleHistory,
)
from thorbis_automotive.schemas import (
    BAY_BOARD,
    LABOR_ESTIMATE,
    MAKE_MODEL,
    PART,
    PART_DEMAND,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    VEHICLE_HISTORY,
    vehicle_history_key,
)

__all__ = [
    "PATTERNS",
    "bay_board",
    "labor_quote",
    "low_stock",
    "next_services",
    "part_demand",
    "vehicle_history",
    "vehicles_of_model",
]


def _check_limit(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


async def vehicle_history(cache: Cache, tenant: str, *, vin: str) -> VehicleHistory | None:
    """The cached history of a VIN.

    :raises InvalidVinError: naming ``auto.vehicle_history`` and ``vin``.
    """
    return await cache.get(vehicle_history_key(tenant, vin))


async def next_services(
    cache: Cache, tenant: str, *, vin: str, n: int = 3
) -> list[ScheduledService]:
    """The ``n`` services due soonest for a VIN (from its cached schedule; empty when
    not cached).

    :raises InvalidVinError: naming ``auto.vehicle_history`` and ``vin``.
    """
    _check_limit("n", n)
    history = await vehicle_history(cache, tenant, vin=vin)
    return [] if history is None else history.schedule[:n]


async def vehicles_of_model(
    cache: Cache,
    tenant: str,
    *,
    make: str,
    model: str,
    min_year: int | None = None,
    max_year: int | None = None,
    limit: int = 100,
) -> list[tuple[str, int]]:
    """VINs of a make and model, optionally within model years, as ``(vin, year)``
    oldest model year first (one ``ZRANGE BYSCORE ... LIMIT``)."""
    _check_limit("limit", limit)
    if limit == 0:
        return []
    found = await cache.zset(MAKE_MODEL.key(tenant, make=make, model=model)).range_by_score(
        "-inf" if min_year is None else min_year,
        "+inf" if max_year is None else max_year,
        count=limit,
    )
    return [(vin, int(year)) for vin, year in found]


async def low_stock(
    cache: Cache, tenant: str, *, at_most: float | None = None, limit: int = 100
) -> list[LowStockPart]:
    """Parts low on stock, lowest first, with their cached hashes.

    :param at_most: parts with at most this many units on hand (the seed's by-stock set);
        None: parts at or below their own reorder point (the margin set, on hand -
        reorder point <= 0), which is what "low" means for a part with a known demand.
    :param limit: at most this many.
    """
    _check_limit("limit", limit)
    if limit == 0:
        return []
    if at_most is None:
        scores = PARTS_REORDER_MARGIN.key(tenant)
        high: float = 0
    else:
        scores, high = PARTS_BY_STOCK.key(tenant), at_most
    found = await cache.zset(scores).range_by_score("-inf", high, count=limit)
    hashes = await asyncio.gather(
        *(cache.hash(PART.key(tenant, part_number=p)).get() for p, _ in found)
    )
    return [LowStockPart(p, score, h) for (p, score), h in zip(found, hashes)]


async def part_demand(cache: Cache, tenant: str, *, part_number: str) -> PartDemand | None:
    """A part's cached weekly demand (from the view)."""
    return await cache.get(PART_DEMAND.key(tenant, part_number=part_number))


async def labor_quote(
    cache: Cache, tenant: str, *, service_type: str, month: int
) -> LaborQuote | None:
    """The labor estimate of a service type for a calendar month: standard hours times
    the month's seasonal factor, and its amount at the type's rate (None when the
    estimate is not cached).

    :raises ValueError: ``month`` outside 1-12.
    """
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, got {month}")
    estimate = await cache.get(LABOR_ESTIMATE.key(tenant, service_type=service_type))
    if estimate is None:
        return None
    factor = estimate.monthly_factors[month - 1] if len(estimate.monthly_factors) == 12 else 1.0
    hours = estimate.standard_hours * factor
    return LaborQuote(service_type, month, factor, hours,
                      estimated_amount(hours, estimate.labor_rate))


async def bay_board(cache: Cache, tenant: str, *, day: dt.date) -> BayBoard | None:
    """The cached bay utilisation board of a UTC day (from the view)."""
    return await cache.get(BAY_BOARD.key(tenant, day=day))


#: The registered patterns.
PATTERNS: tuple[CachePattern, ...] = (
    CachePattern(
        "auto.vehicle_history", vehicle_history, schemas=(VEHICLE_HISTORY.name,),
        description="a VIN's service history and maintenance schedule",
    ),
    CachePattern(
        "auto.next_services", next_services, schemas=(VEHICLE_HISTORY.name,),
        description="the services due soonest for a VIN",
    ),
    CachePattern(
        "auto.vehicles_of_model", vehicles_of_model, schemas=(MAKE_MODEL.name,),
        description="VINs of a make and model within model years",
    ),
    CachePattern(
        "auto.low_stock", low_stock,
        schemas=(PARTS_REORDER_MARGIN.name, PARTS_BY_STOCK.name, PART.name),
        description="parts at or below their reorder point (or a stock level)",
    ),
    CachePattern(
        "auto.part_demand", part_demand, schemas=(PART_DEMAND.name,),
        description="a part's weekly demand over 52 weeks",
    ),
    CachePattern(
        "auto.labor_quote", labor_quote, schemas=(LABOR_ESTIMATE.name,),
        description="labor hours and amount of a service type in a month",
    ),
    CachePattern(
        "auto.bay_board", bay_board, schemas=(BAY_BOARD.name,),
        description="bay utilisation of a day",
    ),
)
