"""The home-services vertical's part in ``thorbis-cache demo``: :data:`DEMO`.

* **populate** loads :mod:`~thorbis_home_services.datagen`'s rows (200 customers per
  tenant at scale 1, linear in ``scale``);
* **read** is one read-through with the plugin's loaders, skewed the way a dispatcher's
  screen reads, most of it rows of the materialized views: ``hs.customer_summary`` (a
  view row, ``get_or_load``) 50%, ``hs.customer`` (``cache.hash(key).get_or_load``) 10%,
  ``hs.customer_history`` (the recent-services pattern with ``fetch=``: the sorted set
  read through) 10%, ``hs.work_order`` 20%, ``hs.technician_performance`` (a view row)
  10%;
* **change** commits one of three changes, each after reading through the cache what it
  concerns (so that entry is cached):

  - half the time, a work order's priority raised or the order started -- covered by
    :data:`~thorbis_home_services.rules.WORK_ORDER_ENTITY`; verify re-reads the order
    through the cache and compares it with PostgreSQL;
  - a quarter, an invoice of a customer inserted or repriced. No rule covers invoices:
    they change only the views, and the views show nothing of it until their refresh.
    Verify checks that the customer's summary, read before the change, is still served
    from the cache (not invalidated) and still equals the view's row;
  - a quarter, a customer's phone number changed -- covered by
    :data:`~thorbis_home_services.rules.CUSTOMER_ENTITY`; verify re-reads the customer
    hash through the cache and compares it with PostgreSQL.
"""

from __future__ import annotations

import decimal
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from thorbis_cache.demo.protocol import DemoChange

from thorbis_home_services import datagen, loaders, patterns
from thorbis_home_services.models import Customer, CustomerSummary, WorkOrder
from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    CUSTOMER_SUMMARY,
    TECHNICIAN_PERFORMANCE,
    WORK_ORDER,
)

if TYPE_CHECKING:
    import asyncpg
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.core import Cache

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
# Invoices and work orders of customers that have a summary row (whose summary the
# invoice change reads first).
_INVOICES = """
SELECT i.id, i.customer_id FROM hs.invoices i
  JOIN hs.customer_summary s ON s.tenant_id = i.tenant_id AND s.customer_id = i.customer_id
 WHERE i.tenant_id = $1 AND i.status <> 'void'
 ORDER BY i.id
"""
_BILLABLE = """
SELECT w.id, w.customer_id FROM hs.work_orders w
  JOIN hs.customer_summary s ON s.tenant_id = w.tenant_id AND s.customer_id = w.customer_id
 WHERE w.tenant_id = $1
 ORDER BY w.id
"""
# The next id of the tenant's invoices, in the INSERT itself (changes run one at a time).
_INSERT_INVOICE = """
INSERT INTO hs.invoices (tenant_id, id, work_order_id, customer_id, status,
                         subtotal_amount, tax_amount, total_amount)
SELECT $1, coalesce(max(id), 0) + 1, $2, $3, 'sent', $4, 0, $4
  FROM hs.invoices WHERE tenant_id = $1
RETURNING id
"""
_REPRICE = """
UPDATE hs.invoices
   SET subtotal_amount = subtotal_amount + $3, total_amount = total_amount + $3,
       updated_at = now()
 WHERE tenant_id = $1 AND id = $2
"""
_REPHONE = """
UPDATE hs.customers SET phone = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2
"""


@attrs.frozen(slots=True)
class _Catalogue:
    customers: tuple[int, ...]
    orders: tuple[int, ...]
    technicians: tuple[int, ...]


def _amount(rng: random.Random) -> decimal.Decimal:
    """An invoice amount between 10.00 and 500.00."""
    return decimal.Decimal(rng.randint(1_000, 50_000)) / 100


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
        """One read-through of a customer summary, customer, service history, work order
        or technician row; returns the schema name read.

        :raises LookupError: the tenant has no data (populate and refresh first).
        """
        cat = await self._catalogue(pool, tenant)
        cache, fetch = app.cache, pool.fetch
        roll = rng.random()
        if roll < 0.7 and cat.customers:
            cid = rng.choice(cat.customers)
            if roll < 0.5:
                await cache.get_or_load(CUSTOMER_SUMMARY.key(tenant, customer_id=cid),
                                        lambda: loaders.customer_summary(fetch, tenant, cid))
                return CUSTOMER_SUMMARY.name
            if roll < 0.6:
                await cache.hash(CUSTOMER.key(tenant, customer_id=cid)).get_or_load(
                    lambda: loaders.customer(fetch, tenant, cid))
                return CUSTOMER.name
            await patterns.recent_services(cache, tenant, customer_id=cid, fetch=fetch)
            return CUSTOMER_HISTORY.name
        if roll < 0.9 and cat.orders:
            oid = rng.choice(cat.orders)
            await cache.get_or_load(WORK_ORDER.key(tenant, work_order_id=oid),
                                    lambda: loaders.work_order(fetch, tenant, oid))
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
        """Cache an entry, commit a change of its rows (a work order, an invoice or a
        customer, see the module), return the check.

        :raises LookupError: the tenant has nothing to change (populate first).
        """
        roll = rng.random()
        if roll < 0.5:
            return await _change_work_order(app.cache, pool, tenant, rng)
        if roll < 0.75:
            return await _change_invoice(app.cache, pool, tenant, rng)
        return await _change_customer(app.cache, pool, tenant, rng,
                                      await self._catalogue(pool, tenant))


async def _change_work_order(cache: Cache, pool: asyncpg.Pool, tenant: str,
                             rng: random.Random) -> DemoChange:
    """Cache an open work order, then raise its priority or start it."""
    open_orders = await pool.fetch(_OPEN, tenant)
    if not open_orders:
        raise LookupError(f"tenant {tenant!r} has no open work order (populate first)")
    order = rng.choice(open_orders)
    oid: int = order["id"]
    key = WORK_ORDER.key(tenant, work_order_id=oid)
    fetch = pool.fetch

    def load() -> Awaitable[WorkOrder]:
        return loaders.work_order(fetch, tenant, oid)

    async def through_cache() -> WorkOrder:
        return await cache.get_or_load(key, load)

    before = await through_cache()
    if order["status"] == "in_progress" or rng.random() < 0.5:
        await pool.execute(_RAISE, tenant, oid)
        what = f"work order {oid} priority raised from {before.priority.value}"
    else:
        await pool.execute(_START, tenant, oid)
        what = f"work order {oid} started (was {before.status.value})"

    def differs(cached: WorkOrder, fresh: WorkOrder) -> str:
        return (f"work order {fresh.id}: the cache has priority {cached.priority.value}, "
                f"status {cached.status.value}; PostgreSQL {fresh.priority.value}, "
                f"{fresh.status.value}")

    return DemoChange(what, _verify(through_cache, load, differs))


async def _change_invoice(cache: Cache, pool: asyncpg.Pool, tenant: str,
                          rng: random.Random) -> DemoChange:
    """Cache a customer's summary, then insert or reprice one of their invoices."""
    fetch = pool.fetch
    amount = _amount(rng)
    if rng.random() < 0.5:
        billable = await pool.fetch(_BILLABLE, tenant)
        if not billable:
            raise LookupError(f"tenant {tenant!r} has no work order to bill (populate first)")
        target = rng.choice(billable)
        cid: int = target["customer_id"]
        await _cache_summary(cache, fetch, tenant, cid)
        invoice = await pool.fetchval(_INSERT_INVOICE, tenant, target["id"], cid, amount)
        what = f"invoice {invoice} of {amount} for customer {cid} inserted"
    else:
        invoices = await pool.fetch(_INVOICES, tenant)
        if not invoices:
            raise LookupError(f"tenant {tenant!r} has no invoice (populate first)")
        target = rng.choice(invoices)
        cid = target["customer_id"]
        await _cache_summary(cache, fetch, tenant, cid)
        await pool.execute(_REPRICE, tenant, target["id"], amount)
        what = f"invoice {target['id']} of customer {cid} raised by {amount}"
    key = CUSTOMER_SUMMARY.key(tenant, customer_id=cid)

    async def verify() -> str | None:
        cached = await cache.get(key)  # the cache only: was the entry dropped?
        if cached is None:
            return (f"customer {cid}'s summary was dropped by an invoice change: the view "
                    "has not been refreshed, so readers reload the same row")
        fresh = await loaders.customer_summary(fetch, tenant, cid)
        if cached == fresh:
            return None
        return (f"customer {cid}'s summary: the cache has lifetime value "
                f"{cached.lifetime_value}; the view {fresh.lifetime_value}")

    return DemoChange(what + " (the summary view shows it at its refresh)", verify)


async def _cache_summary(cache: Cache, fetch: loaders.Fetch, tenant: str,
                         customer_id: int) -> CustomerSummary:
    """Read a customer's summary through the cache (so it is cached)."""
    return await cache.get_or_load(CUSTOMER_SUMMARY.key(tenant, customer_id=customer_id),
                                   lambda: loaders.customer_summary(fetch, tenant, customer_id))


async def _change_customer(cache: Cache, pool: asyncpg.Pool, tenant: str,
                           rng: random.Random, cat: _Catalogue) -> DemoChange:
    """Cache a customer's hash, then change their phone number."""
    if not cat.customers:
        raise LookupError(f"tenant {tenant!r} has no customer (populate first)")
    cid = rng.choice(cat.customers)
    entity = cache.hash(CUSTOMER.key(tenant, customer_id=cid))
    fetch = pool.fetch

    def load() -> Awaitable[Customer]:
        return loaders.customer(fetch, tenant, cid)

    async def through_cache() -> Customer:
        return await entity.get_or_load(load)

    before = await through_cache()
    phone = f"+1-555-{rng.randrange(1000):03d}-{rng.randrange(10000):04d}"
    await pool.execute(_REPHONE, tenant, cid, phone)

    def differs(cached: Customer, fresh: Customer) -> str:
        return (f"customer {cid}: the cache has phone {cached.phone}, updated "
                f"{cached.updated_at.isoformat()}; PostgreSQL {fresh.phone}, updated "
                f"{fresh.updated_at.isoformat()}")

    return DemoChange(f"customer {cid} phone {before.phone} -> {phone}",
                      _verify(through_cache, load, differs))


def _verify(
    through_cache: Callable[[], Awaitable[Any]],
    load: Callable[[], Awaitable[Any]],
    differs: Callable[[Any, Any], str],
) -> Callable[[], Awaitable[str | None]]:
    """A verify that reads the entry through the cache and from PostgreSQL: None when
    they are equal, else ``differs(cached, fresh)``."""
    async def verify() -> str | None:
        cached = await through_cache()
        fresh = await load()
        return None if cached == fresh else differs(cached, fresh)

    return verify


#: The object ``thorbis-cache demo`` finds (``thorbis_home_services.demo.DEMO``).
DEMO = HomeServicesDemo()
