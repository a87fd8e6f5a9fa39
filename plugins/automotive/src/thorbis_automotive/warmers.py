"""The vertical's warmers: fill a tenant's cache from PostgreSQL ahead of demand.

Each warmer yields :class:`~thorbis_cache.warming.WarmBatch` es, which the core runs
with :func:`~thorbis_cache.warming.warm`: a warmer first reads only the ids of what it
means to warm (one cheap query), and each batch's ``load`` reads the rows of the keys it
is given -- the keys whose fill lease was taken -- after the leases. A change committed
between the lease and the write revokes it, so a warmer never writes a row older than a
concurrent change. Entries take their key's shape (:mod:`thorbis_automotive.loaders`):
the record for a value or a hash, the whole set member -> score for a sorted set; a
leased entity whose row has gone is left out of the mapping (an absent row).

Entity batches come before the sets that point at them. Each warmer costs a fixed
number of queries per tenant, whatever its size, and every query is tenant-scoped and
bounded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.plugins.declarations import Fetch, WarmContext, Warmer
from thorbis_cache.warming import WarmBatch, batch_of

from thorbis_automotive import loaders
from thorbis_automotive.schemas import (
    LABOR_SEASONALITY,
    MAKE_MODEL,
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    SERVICE_TYPE,
    VEHICLE_HISTORY,
)

__all__ = [
    "RECENT_DAYS",
    "RECENT_VEHICLES",
    "default_warmers",
    "labor_warmer",
    "parts_warmer",
    "vehicles_warmer",
]

Batches = AsyncIterator[WarmBatch]
Entries = Mapping[CacheKey[Any], Any]

#: Vehicles serviced in the last RECENT_DAYS days are likely back soon (at most
#: RECENT_VEHICLES of them get their history warmed).
RECENT_DAYS = 30
RECENT_VEHICLES = 500


def history_batch(fetch: Fetch, tenant: str, vins: Sequence[str]) -> WarmBatch:
    """The histories of these vehicles (stored VINs, which passed ``auto.vin_is_valid``:
    their keys are built without re-checking)."""
    return batch_of(VEHICLE_HISTORY, tenant, vins,
                    lambda leased: loaders.vehicle_histories(fetch, tenant, leased),
                    key_of=lambda h: h.vehicle.vin,
                    description=f"histories of {len(vins)} vehicles")


def make_model_batch(fetch: Fetch, tenant: str, pairs: Sequence[tuple[str, str]]) -> WarmBatch:
    """The whole make/model sets of these ``(make, model)`` pairs."""
    keys = {MAKE_MODEL.key(tenant, make=make, model=model): (make, model)
            for make, model in pairs}

    async def load(leased: Sequence[CacheKey[Any]]) -> Entries:
        # A pair whose vehicles all went meanwhile is an empty set, as its read-through
        # would cache it.
        sets = await loaders.make_model_sets(fetch, tenant, [keys[k] for k in leased])
        return {k: sets[keys[k]] for k in leased}

    return WarmBatch(tuple(keys), load, description=f"{len(keys)} make/model sets")


def vehicles_warmer(days: int = RECENT_DAYS, limit: int = RECENT_VEHICLES) -> Warmer:
    """Histories of the vehicles serviced in the last ``days`` days (at most ``limit``),
    then every make/model set in full. Two id queries and one batch query each."""

    async def produce(ctx: WarmContext) -> Batches:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        vins = await loaders.recent_vins(ctx.fetch, ctx.tenant, since, limit)
        if vins:
            yield history_batch(ctx.fetch, ctx.tenant, vins)
        pairs = await loaders.make_model_pairs(ctx.fetch, ctx.tenant)
        if pairs:
            yield make_model_batch(ctx.fetch, ctx.tenant, pairs)

    return Warmer(
        "auto.vehicles", produce, schemas=(VEHICLE_HISTORY.name, MAKE_MODEL.name),
        description=f"histories of vehicles serviced in {days} days; make/model sets",
    )


def part_batch(fetch: Fetch, tenant: str, numbers: Sequence[str]) -> WarmBatch:
    """The hashes of these parts."""
    return batch_of(PART, tenant, numbers,
                    lambda leased: loaders.parts(fetch, tenant, leased),
                    key_of=lambda p: p.part_number, description=f"{len(numbers)} parts")


def stock_sets_batch(fetch: Fetch, tenant: str) -> WarmBatch:
    """The by-stock and reorder-margin sets, whole."""
    by_stock, margin = PARTS_BY_STOCK.key(tenant), PARTS_REORDER_MARGIN.key(tenant)

    async def load(leased: Sequence[CacheKey[Any]]) -> Entries:
        if margin not in leased:
            # The stock column alone: no demand statistics to compute.
            return {by_stock: await loaders.parts_by_stock(fetch, tenant)}
        stock, margins = loaders.stock_scores(await loaders.all_parts(fetch, tenant))
        return {by_stock: stock, margin: margins} if by_stock in leased else {margin: margins}

    return WarmBatch((by_stock, margin), load, description="the stock sets")


def parts_warmer() -> Warmer:
    """Every part's hash, then the by-stock and reorder-margin sets. One id query, two
    queries per batch."""

    async def produce(ctx: WarmContext) -> Batches:
        numbers = await loaders.part_numbers(ctx.fetch, ctx.tenant)
        if numbers:
            yield part_batch(ctx.fetch, ctx.tenant, numbers)
        yield stock_sets_batch(ctx.fetch, ctx.tenant)

    return Warmer(
        "auto.parts", produce,
        schemas=(PART.name, PARTS_BY_STOCK.name, PARTS_REORDER_MARGIN.name),
        description="every part and the stock sets",
    )


def service_type_batch(fetch: Fetch, tenant: str, codes: Sequence[str]) -> WarmBatch:
    """The entries of these service types."""
    return batch_of(SERVICE_TYPE, tenant, codes,
                    lambda leased: loaders.service_types(fetch, tenant, leased),
                    key_of=lambda t: t.code, description=f"{len(codes)} service types")


def seasonality_batch(fetch: Fetch, tenant: str, codes: Sequence[str]) -> WarmBatch:
    """The seasonal labor factors of these service types (from the view)."""
    return batch_of(LABOR_SEASONALITY, tenant, codes,
                    lambda leased: loaders.labor_seasonalities(fetch, tenant, leased),
                    key_of=lambda s: s.service_type,
                    description=f"seasonality of {len(codes)} service types")


def labor_warmer() -> Warmer:
    """Every service type, then its seasonal labor factors: what a labor quote reads.
    One id query, one query per batch."""

    async def produce(ctx: WarmContext) -> Batches:
        codes = await loaders.service_type_codes(ctx.fetch, ctx.tenant)
        if codes:
            yield service_type_batch(ctx.fetch, ctx.tenant, codes)
            yield seasonality_batch(ctx.fetch, ctx.tenant, codes)

    return Warmer(
        "auto.labor", produce, schemas=(SERVICE_TYPE.name, LABOR_SEASONALITY.name),
        description="every service type and its seasonal labor factors",
    )


def default_warmers() -> tuple[Warmer, ...]:
    """The warmers the plugin registers, with their default settings."""
    return (vehicles_warmer(), parts_warmer(), labor_warmer())
