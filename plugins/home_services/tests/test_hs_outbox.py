"""The rules end to end, applied as in production: capture triggers, the outbox worker,
real PostgreSQL and Redis. A cached absence goes when its row is inserted; a customer
edit drops the customer, not the view mirrors; an invoice change drops nothing -- the
views' refresh drops their mirrors, and the reload shows it. And the demo's reads and
changes, verified after the worker ran (and reported stale when it did not)."""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hs_testing import TENANTS, HsApp, never
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.errors import MissingRow
from thorbis_cache.mv.refresh import refresh_and_invalidate

from thorbis_home_services import loaders, patterns
from thorbis_home_services.demo import HomeServicesDemo
from thorbis_home_services.models import CustomerSegment
from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    CUSTOMER_SUMMARY,
    FINANCIAL_DAILY,
    SERVICE_AREA,
    TECHNICIAN_PERFORMANCE,
    WORK_ORDER,
)
from thorbis_home_services.views import CUSTOMER_SUMMARY_VIEW, FINANCIAL_DAILY_VIEW

PLUGIN = "home_services"
TODAY = dt.datetime.now(dt.UTC).date()

NEW_CUSTOMER = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
VALUES ($1, $2, 'Ada', 'Lovelace', 'ada@example.com', '555-0100', 'residential', 'active',
        'current', -97.7, 30.2)
"""
NEW_WORK_ORDER = """
INSERT INTO hs.work_orders (tenant_id, id, customer_id, status, priority, service_type,
                            scheduled_at, longitude, latitude)
SELECT $1, $2, min(id), 'pending', 'high', 'hvac', now(), -97.7, 30.2
  FROM hs.customers WHERE tenant_id = $1
"""


class Counted:
    """A loader that counts its calls."""

    def __init__(self, load: Callable[[], Awaitable[Any]]) -> None:
        self.load = load
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        return await self.load()


class Rolled(random.Random):
    """A seeded Random whose first rolls are fixed: which change the demo makes."""

    def __init__(self, rolls: list[float], seed: int = 0) -> None:
        super().__init__(seed)
        self._rolls = list(rolls)

    def random(self) -> float:
        return self._rolls.pop(0) if self._rolls else super().random()

    def getrandbits(self, k: int) -> int:
        # Defined here so that choice() and randint() keep drawing bits (Random's
        # subclasses that define random() alone draw them from random()).
        return super().getrandbits(k)


@pytest.mark.parametrize("entity", ["customer", "work order"])
async def test_a_cached_absence_goes_when_its_row_is_inserted(hs_app: HsApp, entity: str) -> None:
    cache = hs_app.app.cache
    if entity == "customer":
        table, insert = "hs.customers", NEW_CUSTOMER
    else:
        table, insert = "hs.work_orders", NEW_WORK_ORDER
    new_id = await hs_app.conn.fetchval(
        f"SELECT max(id) + 1 FROM {table} WHERE tenant_id = 'acme'")  # noqa: S608

    def read(loader: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        if entity == "customer":
            return cache.hash(CUSTOMER.key("acme", customer_id=new_id)).get_or_load(loader)
        return cache.get_or_load(WORK_ORDER.key("acme", work_order_id=new_id), loader)

    load = Counted(lambda: (loaders.customer if entity == "customer" else loaders.work_order)(
        hs_app.fetch, "acme", new_id))
    for _ in range(2):
        with pytest.raises(MissingRow):
            await read(load)
    assert load.calls == 1, "the absence was not cached"
    await hs_app.conn.execute(insert, "acme", new_id)
    # Until the worker applies the INSERT, the absence stands...
    with pytest.raises(MissingRow):
        await read(never)
    assert await hs_app.apply_changes() > 0
    # ...then the INSERT rule has dropped it, and the row is read through.
    found = await read(load)
    assert found.id == new_id
    assert load.calls == 2
    assert await read(never) == found


async def test_an_invoice_change_leaves_the_view_mirrors_to_the_refresh(hs_app: HsApp) -> None:
    cache, fetch = hs_app.app.cache, hs_app.fetch
    order = await hs_app.conn.fetchrow(
        "SELECT id, customer_id, assigned_technician_id, service_area_id FROM hs.work_orders "
        "WHERE tenant_id = 'acme' AND status = 'completed' AND assigned_technician_id IS NOT "
        "NULL AND service_area_id IS NOT NULL AND created_at > now() - interval '30 days' "
        "ORDER BY id LIMIT 1")
    cid, tid, aid = order["customer_id"], order["assigned_technician_id"], order["service_area_id"]
    summary_key = CUSTOMER_SUMMARY.key("acme", customer_id=cid)
    day_key = FINANCIAL_DAILY.key("acme", report_date=TODAY)
    mirrors: dict[CacheKey[Any], Any] = {
        summary_key: await cache.get_or_load(
            summary_key, lambda: loaders.customer_summary(fetch, "acme", cid)),
        day_key: await cache.get_or_load(day_key,
                                         lambda: loaders.financial_day(fetch, "acme", TODAY)),
    }
    perf_key = TECHNICIAN_PERFORMANCE.key("acme", technician_id=tid)
    mirrors[perf_key] = await cache.get_or_load(
        perf_key, lambda: loaders.technician_performance(fetch, "acme", tid))
    area = cache.hash(SERVICE_AREA.key("acme", area_id=aid))
    area_before = await area.get_or_load(lambda: loaders.service_area(fetch, "acme", aid))

    amount = decimal.Decimal("123.45")
    await hs_app.conn.execute(
        "INSERT INTO hs.invoices (tenant_id, id, work_order_id, customer_id, status, "
        "subtotal_amount, tax_amount, total_amount) SELECT 'acme', max(id) + 1, $1, $2, "
        "'sent', $3, 0, $3 FROM hs.invoices WHERE tenant_id = 'acme'", order["id"], cid, amount)
    await hs_app.conn.execute(
        "UPDATE hs.invoices SET total_amount = total_amount + 1 WHERE tenant_id = 'acme' "
        "AND id = (SELECT min(id) FROM hs.invoices WHERE tenant_id = 'acme')")
    # No rule covers invoices: nothing to apply, and every mirror is still served.
    assert await hs_app.apply_changes() == 0
    for key, before in mirrors.items():
        assert await cache.get(key) == before, key.body
    assert await area.get() == area_before

    # The view's refresh is what drops its mirrors; the reload shows the invoice.
    await refresh_and_invalidate(hs_app.app, hs_app.conn, PLUGIN, CUSTOMER_SUMMARY_VIEW)
    assert await cache.get(summary_key) is None
    assert await cache.get(day_key) == mirrors[day_key]  # another view's mirror stays
    after = await cache.get_or_load(summary_key,
                                    lambda: loaders.customer_summary(fetch, "acme", cid))
    assert after.lifetime_value == mirrors[summary_key].lifetime_value + amount
    await refresh_and_invalidate(hs_app.app, hs_app.conn, PLUGIN, FINANCIAL_DAILY_VIEW)
    day = await cache.get_or_load(day_key, lambda: loaders.financial_day(fetch, "acme", TODAY))
    assert day.invoice_count == mirrors[day_key].invoice_count + 1


async def test_a_customer_edit_drops_the_customer_not_its_summary(hs_app: HsApp) -> None:
    cache, fetch = hs_app.app.cache, hs_app.fetch
    cid = await hs_app.conn.fetchval("SELECT min(id) FROM hs.customers "
                                     "WHERE tenant_id = 'acme' AND account_status = 'active'")
    entity = cache.hash(CUSTOMER.key("acme", customer_id=cid))
    summary_key = CUSTOMER_SUMMARY.key("acme", customer_id=cid)

    async def fill() -> None:
        await entity.get_or_load(lambda: loaders.customer(fetch, "acme", cid))
        await cache.get_or_load(summary_key, lambda: loaders.customer_summary(fetch, "acme", cid))
        for segment in CustomerSegment:
            await patterns.top_customers(cache, "acme", segment=segment, fetch=fetch)

    async def cached() -> dict[str, bool]:
        return {
            "customer": await entity.get() is not None,
            "summary": await cache.get(summary_key) is not None,
            "lists": all([await patterns.top_customers(cache, "acme", segment=s) != []
                          for s in CustomerSegment]),
        }

    await fill()
    assert await cached() == {"customer": True, "summary": True, "lists": True}
    # A phone number: the customer goes; its summary (a view row) and the lists stay.
    await hs_app.conn.execute("UPDATE hs.customers SET phone = '555-0199' "
                              "WHERE tenant_id = 'acme' AND id = $1", cid)
    await hs_app.apply_changes()
    assert await cached() == {"customer": False, "summary": True, "lists": True}
    assert (await entity.get_or_load(lambda: loaders.customer(fetch, "acme", cid))).phone == (
        "555-0199")
    # The account status moves the customer between lists: they go too (read from the
    # table); the summary still waits for the view's refresh.
    await hs_app.conn.execute("UPDATE hs.customers SET account_status = 'vip' "
                              "WHERE tenant_id = 'acme' AND id = $1", cid)
    await hs_app.apply_changes()
    assert await cached() == {"customer": False, "summary": True, "lists": False}
    vip = await patterns.top_customers(cache, "acme", segment=CustomerSegment.VIP, n=1000,
                                       fetch=fetch)
    assert cid in dict(vip)


# --------------------------------------------------------------------------- the demo


async def test_demo_reads_go_through_the_cache(hs_app: HsApp) -> None:
    demo = HomeServicesDemo()
    rng = random.Random(3)
    names = [await demo.read(hs_app.app, hs_app.conn, "acme", rng) for _ in range(200)]
    mix = {n: names.count(n) for n in set(names)}
    assert set(mix) == {CUSTOMER_SUMMARY.name, CUSTOMER.name, CUSTOMER_HISTORY.name,
                        WORK_ORDER.name, TECHNICIAN_PERFORMANCE.name}
    # The view-backed summaries are the largest share.
    assert max(mix, key=lambda n: mix[n]) == CUSTOMER_SUMMARY.name
    # The same reads again: every one answered by the cache.
    metrics = hs_app.app.cache.metrics
    misses = sum(metrics.for_schema(n).misses for n in mix)
    hits = sum(metrics.for_schema(n).hits for n in mix)
    rng = random.Random(3)
    for _ in range(200):
        await demo.read(hs_app.app, hs_app.conn, "acme", rng)
    assert sum(metrics.for_schema(n).misses for n in mix) == misses
    assert sum(metrics.for_schema(n).hits for n in mix) == hits + 200


KINDS = {
    "work order": [0.1],
    "invoice inserted": [0.6, 0.1],
    "invoice repriced": [0.6, 0.9],
    "customer": [0.9],
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_demo_changes_are_seen_through_the_cache_after_the_worker(
    hs_app: HsApp, kind: str
) -> None:
    demo = HomeServicesDemo()
    changes = [await demo.change(hs_app.app, hs_app.conn, tenant, Rolled(KINDS[kind], seed))
               for tenant in TENANTS for seed in range(3)]
    words = {"work order": "work order", "invoice inserted": "inserted",
             "invoice repriced": "raised by", "customer": "phone"}
    assert all(words[kind] in c.description for c in changes), [c.description for c in changes]
    stale = [await c.verify() for c in changes]
    if kind.startswith("invoice"):
        # Nothing to invalidate: the summary stays cached and equal to the view's row.
        assert stale == [None] * len(changes)
    else:
        # Before the worker ran, the cache still serves the old row: reported.
        assert all(p is not None and "the cache has" in p for p in stale), stale
    await hs_app.apply_changes()
    assert [await c.verify() for c in changes] == [None] * len(changes)


async def test_demo_invoice_verify_reports_a_dropped_summary(hs_app: HsApp) -> None:
    change = await HomeServicesDemo().change(hs_app.app, hs_app.conn, "acme",
                                             Rolled([0.6, 0.1], 5))
    assert await change.verify() is None
    # As a rule targeting the summary would (the seed's invoice rule did).
    customer_id = int(change.description.split("for customer ")[1].split()[0])
    await hs_app.app.cache.delete(CUSTOMER_SUMMARY.key("acme", customer_id=customer_id))
    problem = await change.verify()
    assert problem is not None
    assert "dropped" in problem
