"""The home-services vertical's part in ``thorbis-cache demo``: :data:`DEMO`.

* **populate** loads :mod:`~thorbis_home_services.datagen`'s rows (200 customers per
  tenant at scale 1, linear in ``scale``);
* **read** is one read-through (``get_or_load``) with the plugin's loaders, skewed the
  way a dispatcher's screen reads: ``hs.customer_summary`` (a row of the materialized
  view) 60%, ``hs.work_order`` 30%, ``hs.technician_performance`` (a view row) 10%;
* **change** caches an open work order, then raises its priority or moves it to
  ``in_progress`` in PostgreSQL -- the change :data:`~thorbis_home_services.rules.WORK_ORDER_ENTITY`
  covers -- and its verify re-reads the order through the cache and compares it with
  PostgreSQL.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from thorbis_cache.demo.protocol import DemoChange

from thorbis_home_services import datagen, loaders
from thorbis_home_services.models import WorkOrder
from thorbis_home_services.schemas import CUSTOMER_SUMMARY, TECHNICIAN_PERFORMANCE, WORK_ORDER

if TYPE_CHECKING:
    import asyncpg
    from thorbis_cache.app import CacheApp

__all__ = ["CUSTOMERS_PER_SCALE", "DEMO", "HomeServicesDemo"]

#: Customers per tenant at scale 1.
CUSTOMERS_PER_SCALE = 200

_CATALOGUE = """
SELECT (SELECT coalesce(array_agg(customer_id ORDER BY customer_id), '{}')
          FROM hs.customer_summary WHERE tenant_id = $1) AS customers,
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM hs.work_orders
         WHERE tenant_id = $1) AS orders,
       (SELECT coalesce(array_agg(technician_id ORDER BY technician_id), '{}')
          FROM hs.technician_performance WHERE tenant_id = $1) AS technicians
"""
_OPEN = """
SELECT id, priority, status FROM hs.work_orders
 WHERE tenant_id = $1 AND status IN ('pending', 'scheduled', 'dispatched', 'in_progress')
 ORDER BY id
"""
_RAISE = """
UPDATE hs.work_orders
   SET priority = CASE priority WHEN 'low' THEN 'standard' WHEN 'standard' THEN 'high'
                                WHEN 'high' THEN 'urgent' ELSE 'emergency' END,
       updated_at = now()
 WHERE tenant_id = $1 AND id = $2
"""
_START = """
UPDATE hs.work_orders SET status = 'in_progress', started_at = now(), updated_at = now()
 WHERE tenant_id = $1 AND id = $2
"""


@attrs.frozen(slots=True)
class _Catalogue:
    customers: tuple[int, ...]
    orders: tuple[int, ...]
    technicians: tuple[int, ...]


async def _work_order(fetch: loaders.Fetch, tenant: str, order_id: int) -> WorkOrder:
    found = await loaders.work_orders(fetch, tenant, [order_id])
    if not found:
        raise loaders.MissingRow("hs.work_orders", tenant, order_id)
    return found[0]


@attrs.define
class HomeServicesDemo:
    """:class:`thorbis_cache.demo.protocol.VerticalDemo` of the home-services plugin.

    Each tenant's ids are read once (after the views are refreshed), so reads measure
    the cache, not a lookup of what to read.
    """

    plugin: str = "home_services"
    title: str = "Home services"
    _catalogues: dict[str, _Catalogue] = attrs.field(factory=dict, repr=False)

    async def populate(self, conn: asyncpg.Connection, tenants: Sequence[str], *,
                       seed: int, scale: int) -> int:
        """COPY the data set of ``tenants``; returns the rows written.

        :raises ValueError: ``scale`` < 1.
        """
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self._catalogues.clear()
        data = await datagen.load(conn, tenants, CUSTOMERS_PER_SCALE * scale, seed=seed)
        return sum(len(data.rows(table)) for table in datagen.TABLES)

    async def _catalogue(self, pool: Any, tenant: str) -> _Catalogue:
        found = self._catalogues.get(tenant)
        if found is None:
            row = await pool.fetchrow(_CATALOGUE, tenant)
            found = _Catalogue(tuple(row["customers"]), tuple(row["orders"]),
                               tuple(row["technicians"]))
            self._catalogues[tenant] = found
        return found

    async def read(self, app: CacheApp, pool: asyncpg.Pool, tenant: str,
                   rng: random.Random) -> str:
        """One read-through of a customer summary, work order or technician row;
        returns the schema name read.

        :raises LookupError: the tenant has no data (populate and refresh first).
        """
        cat = await self._catalogue(pool, tenant)
        cache, fetch = app.cache, pool.fetch
        roll = rng.random()
        if roll < 0.6 and cat.customers:
            cid = rng.choice(cat.customers)
            await cache.get_or_load(CUSTOMER_SUMMARY.key(tenant, customer_id=cid),
                                    lambda: loaders.customer_summary(fetch, tenant, cid))
            return CUSTOMER_SUMMARY.name
        if roll < 0.9 and cat.orders:
            oid = rng.choice(cat.orders)
            await cache.get_or_load(WORK_ORDER.key(tenant, work_order_id=oid),
                                    lambda: _work_order(fetch, tenant, oid))
            return WORK_ORDER.name
        if cat.technicians:
            tid = rng.choice(cat.technicians)
            await cache.get_or_load(
                TECHNICIAN_PERFORMANCE.key(tenant, technician_id=tid),
                lambda: loaders.technician_performance(fetch, tenant, tid))
            return TECHNICIAN_PERFORMANCE.name
        raise LookupError(f"tenant {tenant!r} has no home-services data (populate first)")

    async def change(self, app: CacheApp, pool: asyncpg.Pool, tenant: str,
                     rng: random.Random) -> DemoChange:
        """Cache an open work order, raise its priority or start it, return the check.

        :raises LookupError: the tenant has no open work order.
        """
        open_orders = await pool.fetch(_OPEN, tenant)
        if not open_orders:
            raise LookupError(f"tenant {tenant!r} has no open work order (populate first)")
        order = rng.choice(open_orders)
        oid: int = order["id"]
        key = WORK_ORDER.key(tenant, work_order_id=oid)
        fetch = pool.fetch

        def load() -> Awaitable[WorkOrder]:
            return _work_order(fetch, tenant, oid)

        before = await app.cache.get_or_load(key, load)
        if order["status"] == "in_progress" or rng.random() < 0.5:
            await pool.execute(_RAISE, tenant, oid)
            what = f"work order {oid} priority raised from {before.priority.value}"
        else:
            await pool.execute(_START, tenant, oid)
            what = f"work order {oid} started (was {before.status.value})"
        return DemoChange(what, _verify(app.cache.get_or_load, key, load))


def _verify(get_or_load: Callable[..., Awaitable[Any]], key: Any,
            load: Callable[[], Awaitable[WorkOrder]]) -> Callable[[], Awaitable[str | None]]:
    async def verify() -> str | None:
        cached = await get_or_load(key, load)
        fresh = await load()
        if cached == fresh:
            return None
        return (f"work order {fresh.id}: the cache has priority {cached.priority.value}, "
                f"status {cached.status.value}; PostgreSQL {fresh.priority.value}, "
                f"{fresh.status.value}")

    return verify


#: The object ``thorbis-cache demo`` finds (``thorbis_home_services.demo.DEMO``).
DEMO = HomeServicesDemo()
