"""The vertical's named reads (cache patterns), each ``async (cache, tenant, **kwargs)``.

Every pattern takes an optional ``fetch`` (``async (sql, *args) -> rows``,
:data:`thorbis_cache.plugins.declarations.Fetch`; ``pool.fetch`` of asyncpg):

* **with** ``fetch`` it reads *through* the cache: what is not cached is loaded by the
  plugin's loaders (:mod:`thorbis_automotive.loaders`) and cached under a fill lease
  (``get_or_load``, ``hash(...).get_or_load``, ``zset(...).range_by_score(loader=...)``),
  so the answer is PostgreSQL's and the next call is a hit; a row that does not exist
  answers None (an entity) and its absence is cached for the schema's ``negative_ttl``;
* **without** it, it answers from the cache only -- what warmers, writers and earlier
  read-throughs stored -- and returns None or empty results for what is not cached.

Set queries are ``ZRANGE ... BYSCORE`` with a ``LIMIT`` (``O(log N + M)``), never scans;
a set read through is loaded whole and then answered the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TypeVar

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins.declarations import CachePattern, Fetch

from thorbis_automotive import loaders
from thorbis_automotive.labor import estimated_amount
from thorbis_automotive.models import (
    BayBoard,
    LaborQuote,
    LowStockPart,
    Part,
    PartDemand,
    ScheduledService,
    VehicleHistory,
)
from thorbis_automotive.schemas import (
    BAY_BOARD,
    LABOR_SEASONALITY,
    MAKE_MODEL,
    PART,
    PART_DEMAND,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    SERVICE_TYPE,
    VEHICLE_HISTORY,
    vehicle_history_key,
)

__all__ = [
    "PATTERNS",
    "bay_board",
    "labor_quote",
    "low_stock",
    "next_services",
    "part",
    "part_demand",
    "vehicle_history",
    "vehicles_of_model",
]

T = TypeVar("T")


def _check_limit(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


async def _value(
    cache: Cache, key: CacheKey[T], load: Callable[[Fetch], Awaitable[T]], fetch: Fetch | None
) -> T | None:
    """A value entry: read through with ``fetch`` (None for a missing row), else from
    the cache only."""
    if fetch is None:
        return await cache.get(key)
    try:
        return await cache.get_or_load(key, lambda: load(fetch))
    except MissingRow:
        return None


async def _part(cache: Cache, tenant: str, number: str, fetch: Fetch | None) -> Part | None:
    entity = cache.hash(PART.key(tenant, part_number=number))
    if fetch is None:
        return await entity.get()
    try:
        return await entity.get_or_load(lambda: loaders.part(fetch, tenant, number))
    except MissingRow:
        return None


async def vehicle_history(
    cache: Cache, tenant: str, *, vin: str, fetch: Fetch | None = None
) -> VehicleHistory | None:
    """The history of a VIN: with ``fetch`` read through (None: no such vehicle), else
    the cached one (None: not cached).

    :raises InvalidVinError: naming ``auto.vehicle_history`` and ``vin``.
    """
    return await _value(cache, vehicle_history_key(tenant, vin),
                        lambda f: loaders.vehicle_history(f, tenant, vin), fetch)


async def next_services(
    cache: Cache, tenant: str, *, vin: str, n: int = 3, fetch: Fetch | None = None
) -> list[ScheduledService]:
    """The ``n`` services due soonest for a VIN, from its history (read through with
    ``fetch``, else cached only; empty when there is none).

    :raises InvalidVinError: naming ``auto.vehicle_history`` and ``vin``.
    """
    _check_limit("n", n)
    history = await vehicle_history(cache, tenant, vin=vin, fetch=fetch)
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
    fetch: Fetch | None = None,
) -> list[tuple[str, int]]:
    """VINs of a make and model, optionally within model years, as ``(vin, year)``
    oldest model year first (one ``ZRANGE BYSCORE ... LIMIT``; with ``fetch`` the set is
    loaded whole first when it is not cached)."""
    _check_limit("limit", limit)
    if limit == 0:
        return []
    load = None if fetch is None else (
        lambda: loaders.make_model_set(fetch, tenant, make, model))
    found = await cache.zset(MAKE_MODEL.key(tenant, make=make, model=model)).range_by_score(
        "-inf" if min_year is None else min_year,
        "+inf" if max_year is None else max_year,
        count=limit,
        loader=load,
    )
    return [(vin, int(year)) for vin, year in found]


async def low_stock(
    cache: Cache,
    tenant: str,
    *,
    at_most: float | None = None,
    limit: int = 100,
    fetch: Fetch | None = None,
) -> list[LowStockPart]:
    """Parts low on stock, lowest first, with their hashes.

    :param at_most: parts with at most this many units on hand (the seed's by-stock set);
        None: parts at or below their own reorder point (the margin set, on hand -
        reorder point <= 0), which is what "low" means for a part with a known demand.
    :param limit: at most this many.
    :param fetch: read through: the set is loaded whole when not cached, and the
        uncached parts' hashes concurrently (so ``fetch`` must take concurrent queries,
        as a pool's does); a part deleted since has ``part`` None.
    """
    _check_limit("limit", limit)
    if limit == 0:
        return []
    if at_most is None:
        scores = PARTS_REORDER_MARGIN.key(tenant)
        high: float = 0
        load = None if fetch is None else (
            lambda: loaders.parts_reorder_margin(fetch, tenant))
    else:
        scores, high = PARTS_BY_STOCK.key(tenant), at_most
        load = None if fetch is None else lambda: loaders.parts_by_stock(fetch, tenant)
    found = await cache.zset(scores).range_by_score("-inf", high, count=limit, loader=load)
    hashes = await asyncio.gather(*(_part(cache, tenant, p, fetch) for p, _ in found))
    return [LowStockPart(p, score, h) for (p, score), h in zip(found, hashes)]


async def part(
    cache: Cache, tenant: str, *, part_number: str, fetch: Fetch | None = None
) -> Part | None:
    """A part's hash: with ``fetch`` read through (None: no such part), else the
    cached one (None: not cached)."""
    return await _part(cache, tenant, part_number, fetch)


async def part_demand(
    cache: Cache, tenant: str, *, part_number: str, fetch: Fetch | None = None
) -> PartDemand | None:
    """A part's weekly demand (from the view): read through with ``fetch``, else the
    cached one (None: not cached)."""
    return await _value(cache, PART_DEMAND.key(tenant, part_number=part_number),
                        lambda f: loaders.part_demand(f, tenant, part_number), fetch)


async def labor_quote(
    cache: Cache, tenant: str, *, service_type: str, month: int, fetch: Fetch | None = None
) -> LaborQuote | None:
    """The labor estimate of a service type for a calendar month: its standard hours
    (``auto.service_type``) times the month's seasonal factor
    (``auto.labor_seasonality``), and the amount at the type's rate. With ``fetch`` both
    are read through (None: no such service type); without, None unless both are
    cached.

    :raises ValueError: ``month`` outside 1-12.
    """
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, got {month}")
    # The type first: an unknown code answers None without caching a seasonality of
    # a type that does not exist.
    kind = await _value(cache, SERVICE_TYPE.key(tenant, code=service_type),
                        lambda f: loaders.service_type(f, tenant, service_type), fetch)
    if kind is None:
        return None
    seasonality = await _value(cache, LABOR_SEASONALITY.key(tenant, service_type=service_type),
                               lambda f: loaders.labor_seasonality(f, tenant, service_type),
                               fetch)
    if seasonality is None:
        return None
    factors = seasonality.monthly_factors
    factor = factors[month - 1] if len(factors) == 12 else 1.0
    hours = kind.standard_hours * factor
    return LaborQuote(service_type, month, factor, hours,
                      estimated_amount(hours, kind.labor_rate))


async def bay_board(
    cache: Cache, tenant: str, *, day: dt.date, fetch: Fetch | None = None
) -> BayBoard | None:
    """The bay utilisation board of a UTC day (from the view): read through with
    ``fetch``, else the cached one (None: not cached)."""
    return await _value(cache, BAY_BOARD.key(tenant, day=day),
                        lambda f: loaders.bay_board(f, tenant, day), fetch)


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
        "auto.part", part, schemas=(PART.name,),
        description="a part with its stock, demand statistics and reorder point",
    ),
    CachePattern(
        "auto.part_demand", part_demand, schemas=(PART_DEMAND.name,),
        description="a part's weekly demand over 52 weeks",
    ),
    CachePattern(
        "auto.labor_quote", labor_quote, schemas=(SERVICE_TYPE.name, LABOR_SEASONALITY.name),
        description="labor hours and amount of a service type in a month",
    ),
    CachePattern(
        "auto.bay_board", bay_board, schemas=(BAY_BOARD.name,),
        description="bay utilisation of a day",
    ),
)
