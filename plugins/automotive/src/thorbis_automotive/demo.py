"""The automotive vertical's part in ``thorbis-cache demo``: :data:`DEMO`.

* **populate** loads :mod:`~thorbis_automotive.datagen`'s rows (40 vehicles and 40 parts
  per tenant at scale 1, linear in ``scale``);
* **read** is one read-through with the plugin's loaders, of every kind the vertical
  caches, chosen at random with a skew toward vehicle histories (the counter's most
  frequent question): ``auto.vehicle_history`` 45% (a value, ``get_or_load``),
  ``auto.labor_quote`` 20% (the pattern with ``fetch``: a service type and its
  seasonality, a view mirror), ``auto.part`` 15% (a hash, ``hash(key).get_or_load``),
  ``auto.low_stock`` 10% (the pattern with ``fetch``: the reorder-margin sorted set read
  with ``loader=``, then the hashes it names), ``auto.part_demand`` 10% (a view mirror);
* **change** caches an entry through the cache, then commits a change a rule covers:
  half the time it completes one of the tenant's open repair orders of a vehicle (or
  books and completes an oil change when none is open) --
  :data:`~thorbis_automotive.rules.REPAIR_ORDER_HISTORY` -- and otherwise receives stock
  of a part (the ledger trigger updates ``auto.parts``:
  :data:`~thorbis_automotive.rules.STOCK_MOVEMENT`,
  :data:`~thorbis_automotive.rules.PART_ENTITY`); its verify reads the entry through the
  cache again and compares it with what the loader reads from PostgreSQL now.
"""

from __future__ import annotations

import decimal
import random
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from thorbis_cache.cache.core import Cache
from thorbis_cache.demo.protocol import DemoChange

from thorbis_automotive import datagen, loaders, patterns
from thorbis_automotive.models import Part, VehicleHistory
from thorbis_automotive.schemas import PART, PART_DEMAND, vehicle_history_key

if TYPE_CHECKING:
    import asyncpg
    from thorbis_cache.app import CacheApp

__all__ = ["DEMO", "VEHICLES_PER_SCALE", "AutomotiveDemo"]

#: Vehicles (and parts) per tenant at scale 1.
VEHICLES_PER_SCALE = 40

_CATALOGUE = """
SELECT (SELECT coalesce(array_agg(vin ORDER BY vin), '{}') FROM auto.vehicles
         WHERE tenant_id = $1) AS vins,
       (SELECT coalesce(array_agg(code ORDER BY code), '{}') FROM auto.service_types
         WHERE tenant_id = $1) AS codes,
       (SELECT coalesce(array_agg(part_number ORDER BY part_number), '{}') FROM auto.parts
         WHERE tenant_id = $1) AS parts
"""
_OPEN_ORDER = """
SELECT ro.id, ro.vin, st.standard_hours, st.labor_rate
  FROM auto.repair_orders ro
  JOIN auto.service_types st ON st.tenant_id = ro.tenant_id AND st.code = ro.service_type
 WHERE ro.tenant_id = $1 AND ro.status IN ('open', 'in_progress')
 ORDER BY ro.id
"""
_COMPLETE = """
UPDATE auto.repair_orders
   SET status = 'completed', completed_at = now(), labor_hours = $3::numeric,
       labor_amount = round($3::numeric * $4::numeric, 2)
 WHERE tenant_id = $1 AND id = $2
"""
_BOOK_COMPLETED = """
INSERT INTO auto.repair_orders (tenant_id, id, vin, service_type, status, odometer_miles,
                                opened_at, completed_at, labor_hours, labor_amount)
SELECT $1, coalesce(max(ro.id), 0) + 1, v.vin, 'oil_change', 'completed',
       v.odometer_miles + $3, now(), now(), st.standard_hours,
       round(st.standard_hours * st.labor_rate, 2)
  FROM auto.vehicles v
  JOIN auto.service_types st ON st.tenant_id = v.tenant_id AND st.code = 'oil_change'
  LEFT JOIN auto.repair_orders ro ON ro.tenant_id = v.tenant_id
 WHERE v.tenant_id = $1 AND v.vin = $2
 GROUP BY v.vin, v.odometer_miles, st.standard_hours, st.labor_rate
RETURNING id
"""
_RECEIVE = """
INSERT INTO auto.stock_movements (tenant_id, id, part_number, quantity, reason)
SELECT $1, coalesce(max(id), 0) + 1, $2, $3, 'receipt'
  FROM auto.stock_movements
 WHERE tenant_id = $1
RETURNING id
"""
#: Parts the low-stock read asks for.
_LOW_STOCK = 10


@attrs.frozen(slots=True)
class _Catalogue:
    vins: tuple[str, ...]
    codes: tuple[str, ...]
    parts: tuple[str, ...]


@attrs.define
class AutomotiveDemo:
    """:class:`thorbis_cache.demo.protocol.VerticalDemo` of the automotive plugin.

    It remembers each tenant's VINs, service types and part numbers after the first
    read (one query), so reads measure the cache, not a lookup of what to read.
    """

    plugin: str = "automotive"
    title: str = "Automotive"
    _catalogues: dict[str, _Catalogue] = attrs.field(factory=dict, repr=False)

    async def populate(self, conn: asyncpg.Connection, tenants: Sequence[str], *,
                       seed: int, scale: int) -> int:
        """COPY the data set of ``tenants``; returns the rows written.

        :raises ValueError: ``scale`` < 1.
        """
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self._catalogues.clear()
        data = await datagen.load(conn, tenants, VEHICLES_PER_SCALE * scale, seed=seed)
        return sum(data.counts().values())

    async def _catalogue(self, conn: Any, tenant: str) -> _Catalogue:
        found = self._catalogues.get(tenant)
        if found is None:
            # Concurrent first reads may both query: harmless, and no lock is bound to
            # an event loop (DEMO is a module-level object shared by every run).
            row = await conn.fetchrow(_CATALOGUE, tenant)
            found = _Catalogue(tuple(row["vins"]), tuple(row["codes"]), tuple(row["parts"]))
            self._catalogues[tenant] = found
        return found

    async def read(self, app: CacheApp, conn: asyncpg.Pool, tenant: str,
                   rng: random.Random) -> str:
        """One read-through of a history, labor quote, part, low-stock list or weekly
        demand; returns the schema or pattern name read."""
        cat = await self._catalogue(conn, tenant)
        cache, fetch = app.cache, conn.fetch
        roll = rng.random()
        if roll < 0.45 and cat.vins:
            vin = rng.choice(cat.vins)
            await cache.get_or_load(vehicle_history_key(tenant, vin),
                                    lambda: loaders.vehicle_history(fetch, tenant, vin))
            return "auto.vehicle_history"
        if roll < 0.65 and cat.codes:
            code, month = rng.choice(cat.codes), rng.randint(1, 12)
            await patterns.labor_quote(cache, tenant, service_type=code, month=month,
                                       fetch=fetch)
            return "auto.labor_quote"
        if roll < 0.80 and cat.parts:
            number = rng.choice(cat.parts)
            await cache.hash(PART.key(tenant, part_number=number)).get_or_load(
                lambda: loaders.part(fetch, tenant, number))
            return PART.name
        if roll < 0.90 and cat.parts:
            await patterns.low_stock(cache, tenant, limit=_LOW_STOCK, fetch=fetch)
            return "auto.low_stock"
        if cat.parts:
            number = rng.choice(cat.parts)
            await cache.get_or_load(PART_DEMAND.key(tenant, part_number=number),
                                    lambda: loaders.part_demand(fetch, tenant, number))
            return PART_DEMAND.name
        raise LookupError(f"tenant {tenant!r} has no automotive data (populate first)")

    async def change(self, app: CacheApp, conn: asyncpg.Pool, tenant: str,
                     rng: random.Random) -> DemoChange:
        """Cache a history and complete a repair order of its vehicle, or cache a part
        and receive stock of it; return the check.

        :raises LookupError: the tenant has no vehicles or no parts.
        """
        if rng.random() < 0.5:
            return await self._complete_order(app.cache, conn, tenant, rng)
        return await self._receive_stock(app.cache, conn, tenant, rng)

    async def _complete_order(self, cache: Cache, conn: asyncpg.Pool, tenant: str,
                              rng: random.Random) -> DemoChange:
        fetch = conn.fetch
        open_orders = await conn.fetch(_OPEN_ORDER, tenant)
        if open_orders:
            order = rng.choice(open_orders)
            vin = order["vin"]
        else:
            cat = await self._catalogue(conn, tenant)
            if not cat.vins:
                raise LookupError(f"tenant {tenant!r} has no vehicles (populate first)")
            order, vin = None, rng.choice(cat.vins)
        key = vehicle_history_key(tenant, vin)

        def load() -> Awaitable[VehicleHistory]:
            return loaders.vehicle_history(fetch, tenant, vin)

        before = await cache.get_or_load(key, load)
        if order is not None:
            hours = decimal.Decimal(
                str(round(float(order["standard_hours"]) * rng.uniform(0.8, 1.2), 2)))
            await conn.execute(_COMPLETE, tenant, order["id"], hours, order["labor_rate"])
            what = f"repair order {order['id']} of {vin} completed"
        else:
            ro = await conn.fetchval(_BOOK_COMPLETED, tenant, vin, rng.randint(100, 900))
            what = f"oil change {ro} of {vin} booked and completed"

        async def verify() -> str | None:
            cached = await cache.get_or_load(key, load)
            fresh = await load()
            if cached == fresh:
                return None
            return (f"vehicle history of {vin} (tenant {tenant!r}): the cache has "
                    f"{len(cached.services)} completed services, PostgreSQL "
                    f"{len(fresh.services)}")

        return DemoChange(f"{what} ({len(before.services)} services cached before)", verify)

    async def _receive_stock(self, cache: Cache, conn: asyncpg.Pool, tenant: str,
                             rng: random.Random) -> DemoChange:
        fetch = conn.fetch
        cat = await self._catalogue(conn, tenant)
        if not cat.parts:
            raise LookupError(f"tenant {tenant!r} has no parts (populate first)")
        number, quantity = rng.choice(cat.parts), rng.randint(1, 24)
        entity = cache.hash(PART.key(tenant, part_number=number))

        def load() -> Awaitable[Part]:
            return loaders.part(fetch, tenant, number)

        before = await entity.get_or_load(load)
        movement = await conn.fetchval(_RECEIVE, tenant, number, quantity)

        async def verify() -> str | None:
            cached = await entity.get_or_load(load)
            fresh = await load()
            if cached == fresh:
                return None
            return (f"part {number} (tenant {tenant!r}): the cache has {cached.on_hand} "
                    f"on hand, PostgreSQL {fresh.on_hand}")

        return DemoChange(f"{quantity} of part {number} received (movement {movement}; "
                          f"{before.on_hand} on hand cached before)", verify)


#: The object ``thorbis-cache demo`` finds (``thorbis_automotive.demo.DEMO``).
DEMO = AutomotiveDemo()
