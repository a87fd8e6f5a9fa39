"""Writes the vertical's cached structures from records a writer holds the truth of:
what the seed's ``cache*`` methods did.

Use these only with records read in the same transaction as a change, or just written:
each write revokes any read-through fill of the key in flight, so it wins over a reader
that read older rows. Readers fill through the loaders (``get_or_load`` / ``loader=``),
and warmers through :class:`~thorbis_cache.warming.WarmBatch` es, both under fill leases
-- never through these, which would write rows read before a concurrent change.

Each write goes through the core's typed structures, so every key keeps its tenant hash
tag and its TTL (refreshed atomically with the write). A set is written with
``replace=True``, which swaps its whole content in one atomic script. The seed's loop of
one ``HSET`` + ``EXPIRE`` + ``ZADD`` per part becomes one hash write per part and one
write per set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from thorbis_cache.cache.core import Cache

from thorbis_automotive.loaders import stock_scores
from thorbis_automotive.models import Part, VehicleHistory
from thorbis_automotive.schemas import (
    MAKE_MODEL,
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    vehicle_history_key,
)

__all__ = [
    "store_make_model",
    "store_part",
    "store_parts",
    "store_vehicle_history",
]


async def store_vehicle_history(cache: Cache, tenant: str, history: VehicleHistory) -> None:
    """Cache a vehicle's history (its VIN is validated first).

    :raises InvalidVinError: the history's VIN is not valid.
    """
    await cache.set(vehicle_history_key(tenant, history.vehicle.vin), history)


async def store_make_model(
    cache: Cache, tenant: str, make: str, model: str, vins: Mapping[str, float]
) -> None:
    """Replace a make/model set: VIN -> model year."""
    await cache.zset(MAKE_MODEL.key(tenant, make=make, model=model)).add(vins, replace=True)


async def store_part(cache: Cache, tenant: str, part: Part) -> int:
    """Cache a part's hash (whole entity); returns its new version."""
    return await cache.hash(PART.key(tenant, part_number=part.part_number)).replace(part)


async def store_parts(cache: Cache, tenant: str, parts: Iterable[Part]) -> int:
    """Cache every part's hash, then replace both stock sets with exactly ``parts``
    (hashes first: a reader that finds a part number in a set finds its hash).

    :returns: the number of parts.
    """
    parts = list(parts)
    await asyncio.gather(*(store_part(cache, tenant, p) for p in parts))
    by_stock, margin = stock_scores(parts)
    await cache.zset(PARTS_BY_STOCK.key(tenant)).add(by_stock, replace=True)
    await cache.zset(PARTS_REORDER_MARGIN.key(tenant)).add(margin, replace=True)
    return len(parts)

