"""The automotive vertical's part in ``thorbis-cache demo``: :data:`DEMO`.

* **populate** loads :mod:`~thorbis_automotive.datagen`'s rows (40 vehicles and 40 parts
  per tenant at scale 1, linear in ``scale``);
* **read** is one read-through of a value schema with the plugin's loaders, chosen at
  random with a skew toward vehicle histories (the counter's most frequent question):
  ``auto.vehicle_history`` 60%, ``auto.labor_estimate`` 25%, ``auto.part_demand`` 15%;
* **change** caches a vehicle's history, then completes one of the tenant's open repair
  orders of that vehicle (or books and completes an oil change when none is open) --
  the change :data:`~thorbis_automotive.rules.REPAIR_ORDER_HISTORY` covers -- and its
  verify re-reads the history through the cache and compares it with PostgreSQL.
"""

from __future__ import annotations

import decimal
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from thorbis_cache.demo.protocol import DemoChange

from thorbis_automotive import datagen, loaders
from thorbis_automotive.schemas import LABOR_ESTIMATE, PART_DEMAND, vehicle_history_key

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
        """One read-through (``get_or_load``) of a history, labor estimate or weekly
        demand; returns the schema name read."""
        cat = await self._catalogue(conn, tenant)
        cache, fetch = app.cache, conn.fetch
        roll = rng.random()
        if roll < 0.6 and cat.vins:
            vin = rng.choice(cat.vins)
            await cache.get_or_load(vehicle_history_key(tenant, vin),
                                    lambda: loaders.vehicle_history(fetch, tenant, vin))
            return "auto.vehicle_history"
        if roll < 0.85 and cat.codes:
            code = rng.choice(cat.codes)
            await cache.get_or_load(LABOR_ESTIMATE.key(tenant, service_type=code),
                                    lambda: loaders.labor_estimate(fetch, tenant, code))
            return LABOR_ESTIMATE.name
        if cat.parts:
            number = rng.choice(cat.parts)
            await cache.get_or_load(PART_DEMAND.key(tenant, part_number=number),
                                    lambda: loaders.part_demand(fetch, tenant, number))
            return PART_DEMAND.name
        raise LookupError(f"tenant {tenant!r} has no automotive data (populate first)")

    async def change(self, app: CacheApp, conn: asyncpg.Pool, tenant: str,
                     rng: random.Random) -> DemoChange:
        """Cache a history, complete a repair order of its vehicle, return the check.

        :raises LookupError: the tenant has no vehicles.
        """
        cache, fetch = app.cache, conn.fetch
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

        def load() -> Awaitable[Any]:
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
        description = f"{what} ({len(before.services)} services cached before)"
        return DemoChange(description, _verify(cache.get_or_load, key, load, fetch, tenant, vin))


def _verify(get_or_load: Callable[..., Awaitable[Any]], key: Any,
            load: Callable[[], Awaitable[Any]], fetch: loaders.Fetch, tenant: str,
            vin: str) -> Callable[[], Awaitable[str | None]]:
    async def verify() -> str | None:
        cached = await get_or_load(key, load)
        fresh = await loaders.vehicle_history(fetch, tenant, vin)
        if cached == fresh:
            return None
        return (f"vehicle history of {vin} (tenant {tenant!r}): the cache has "
                f"{len(cached.services)} completed services, PostgreSQL "
                f"{len(fresh.services)}")

    return verify


#: The object ``thorbis-cache demo`` finds (``thorbis_automotive.demo.DEMO``).
DEMO = AutomotiveDemo()
