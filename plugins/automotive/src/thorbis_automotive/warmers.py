"""The vertical's warmers: fill a tenant's cache from PostgreSQL ahead of demand.

A warmer yields ``(key, value)`` pairs of this plugin's schemas only; values follow the
key's schema kind (:func:`thorbis_automotive.writers.write_pair`): the record for a value
or a hash, a mapping member -> score for a sorted set (the whole set). Entities come
before the sets that point at them. Each warmer costs a fixed number of queries per
tenant, whatever its size, and every query is tenant-scoped and bounded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from thorbis_cache.declarations import WarmContext, Warmer
from thorbis_cache.keys import CacheKey

from thorbis_automotive import loaders
from thorbis_automotive.schemas import (
    LABOR_ESTIMATE,
    MAKE_MODEL,
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    VEHICLE_HISTORY,
)
from thorbis_automotive.writers import stock_scores

__all__ = [
    "RECENT_DAYS",
    "RECENT_VEHICLES",
    "default_warmers",
    "labor_warmer",
    "parts_warmer",
    "vehicles_warmer",
]

Pairs = AsyncIterator[tuple[CacheKey[Any], Any]]

#: Vehicles serviced in the last RECENT_DAYS days are likely back soon (at most
#: RECENT_VEHICLES of them get their history warmed).
RECENT_DAYS = 30
RECENT_VEHICLES = 500


def vehicles_warmer(days: int = RECENT_DAYS, limit: int = RECENT_VEHICLES) -> Warmer:
    """Histories of the vehicles serviced in the last ``days`` days (at most ``limit``),
    then every make/model set in full."""

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        vins = await loaders.recent_vins(ctx.fetch, tenant, since, limit)
        for history in await loaders.vehicle_histories(ctx.fetch, tenant, vins):
            # Stored VINs passed auto.vin_is_valid: the key is built without re-checking.
            yield VEHICLE_HISTORY.key(tenant, vin=history.vehicle.vin), history
        for (make, model), vins_by_year in (await loaders.make_model_sets(
                ctx.fetch, tenant)).items():
            yield MAKE_MODEL.key(tenant, make=make, model=model), vins_by_year

    return Warmer(
        "auto.vehicles", produce, schemas=(VEHICLE_HISTORY.name, MAKE_MODEL.name),
        description=f"histories of vehicles serviced in {days} days; make/model sets",
    )


def parts_warmer() -> Warmer:
    """Every part's hash, then the by-stock and reorder-margin sets."""

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        parts = await loaders.all_parts(ctx.fetch, tenant)
        for p in parts:
            yield PART.key(tenant, part_number=p.part_number), p
        by_stock, margin = stock_scores(parts)
        yield PARTS_BY_STOCK.key(tenant), by_stock
        yield PARTS_REORDER_MARGIN.key(tenant), margin

    return Warmer(
        "auto.parts", produce,
        schemas=(PART.name, PARTS_BY_STOCK.name, PARTS_REORDER_MARGIN.name),
        description="every part and the stock sets",
    )


def labor_warmer() -> Warmer:
    """Every service type's labor estimate."""

    async def produce(ctx: WarmContext) -> Pairs:
        for estimate in await loaders.labor_estimates(ctx.fetch, ctx.tenant):
            yield LABOR_ESTIMATE.key(ctx.tenant, service_type=estimate.service_type), estimate

    return Warmer(
        "auto.labor", produce, schemas=(LABOR_ESTIMATE.name,),
        description="labor estimates of every service type",
    )


def default_warmers() -> tuple[Warmer, ...]:
    """The warmers the plugin registers, with their default settings."""
    return (vehicles_warmer(), parts_warmer(), labor_warmer())
