"""Warmers and loaders end to end: generated data in PostgreSQL, warmed into a real Cache
(single Redis and Cluster) through ``thorbis_cache.warming.warm`` -- fill leases taken
before the rows are read -- then read back and compared with the database."""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from hs_testing import TENANTS, LoadedDb, entry_loader, never
from thorbis_cache import Cache, WarmBatch, WarmOutcome, warm
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.plugins.declarations import WarmContext, Warmer
from thorbis_cache.testing.contract_fills import read_through, same_content

from thorbis_home_services import loaders, patterns, rows, warmers
from thorbis_home_services.models import AccountStatus, CustomerSegment, WorkOrderStatus
from thorbis_home_services.plugin import register_warmers
from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    CUSTOMER_LIST,
    CUSTOMER_SUMMARY,
    FINANCIAL_DAILY,
    SERVICE_AREA_GEO,
    TECHNICIAN_PERFORMANCE,
    WORK_ORDER,
    WORK_ORDERS_BY_STATUS,
)
from thorbis_home_services.scoring import score_of

TODAY = dt.datetime.now(dt.UTC).date()


async def batches_of(db: LoadedDb, cache: Cache, tenant: str, warmer: Warmer) -> list[WarmBatch]:
    """What ``warmer`` yields for ``tenant`` (its ids queries only: nothing is loaded)."""
    context = WarmContext(cache=cache, tenant=tenant, fetch=db.fetch)
    out = []
    async for batch in warmer.produce(context):
        assert isinstance(batch, WarmBatch)
        for key in batch.keys:
            assert key.schema.namespace == "hs"
            assert key.schema.name in warmer.schemas
            assert key.tenant == tenant
        out.append(batch)
    return out


async def run(db: LoadedDb, cache: Cache, tenant: str,
              *chosen: Warmer) -> tuple[list[CacheKey[Any]], WarmOutcome]:
    """Run warmers for ``tenant``, each batch through ``warm``; returns the keys and the
    summed outcome."""
    keys: list[CacheKey[Any]] = []
    outcome = WarmOutcome()
    for warmer in chosen:
        for batch in await batches_of(db, cache, tenant, warmer):
            outcome += await warm(cache, batch)
            keys += batch.keys
    return keys, outcome


async def test_registered_warmers_fill_entries_equal_to_postgresql(
    hs_db: LoadedDb, hs_cache: Cache
) -> None:
    for warmer in register_warmers():
        keys, outcome = await run(hs_db, hs_cache, "acme", warmer)
        assert {k.schema.name for k in keys} == set(warmer.schemas), warmer.name
        # A cold cache: every key is filled, none refused, none found cached.
        assert outcome == WarmOutcome(filled=len(keys)), warmer.name
        for key in keys:
            # Answered by the cache (the loader would fail), equal to the single-key
            # loader's answer from PostgreSQL.
            cached = await read_through(hs_cache, key, never)
            fresh = await entry_loader(hs_db.fetch, key)()
            assert same_content(key.schema, cached, fresh), key.body
        # A second run finds everything cached and loads nothing.
        _, again = await run(hs_db, hs_cache, "acme", warmer)
        assert again == WarmOutcome(cached=len(keys)), warmer.name


@pytest.mark.parametrize(
    ("warmer", "order"),
    [
        (warmers.customers_warmer(top=5), ["hs.customer", "hs.customer_summary",
                                           "hs.customer_history", "hs.customer_list"]),
        (warmers.work_orders_warmer(), ["hs.work_order", "hs.work_orders_by_status"]),
        (warmers.service_areas_warmer(), ["hs.service_area", "hs.service_area_geo"]),
    ],
    ids=lambda v: v.name if isinstance(v, Warmer) else "",
)
async def test_entities_are_warmed_before_the_lists_that_name_them(
    hs_db: LoadedDb, hs_cache: Cache, warmer: Warmer, order: list[str]
) -> None:
    batches = await batches_of(hs_db, hs_cache, "acme", warmer)
    assert [{k.schema.name for k in b.keys} for b in batches] == [{name} for name in order]
    assert all(b.description for b in batches)


async def test_customer_warmer(hs_db: LoadedDb, hs_cache: Cache) -> None:
    await run(hs_db, hs_cache, "acme", warmers.customers_warmer(top=25))
    customers = [c for c in hs_db.data.records("customers") if c["tenant_id"] == "acme"]
    summaries = {r["customer_id"]: r for r in await hs_db.conn.fetch(
        "SELECT * FROM hs.customer_summary WHERE tenant_id = 'acme'")}
    best = sorted(summaries.values(), key=lambda r: (-r["lifetime_value"], r["customer_id"]))
    best_ids = [r["customer_id"] for r in best[:25]]
    by_id = {c["id"]: c for c in customers}
    for customer_id in best_ids:
        cached = await hs_cache.hash(CUSTOMER.key("acme", customer_id=customer_id)).get()
        assert cached == rows.customer(by_id[customer_id])
        summary = await hs_cache.get(CUSTOMER_SUMMARY.key("acme", customer_id=customer_id))
        assert summary is not None
        assert summary.lifetime_value == summaries[customer_id]["lifetime_value"]
        series = hs_cache.zset(CUSTOMER_HISTORY.key("acme", customer_id=customer_id))
        assert await series.card() == summaries[customer_id]["completed_orders"]
    outside = next(c for c in customers if c["id"] not in best_ids)
    assert await hs_cache.hash(CUSTOMER.key("acme", customer_id=outside["id"])).get() is None
    # Lists are complete, whatever ``top``.
    for segment in CustomerSegment:
        members = dict(await hs_cache.zset(CUSTOMER_LIST.key("acme", segment=segment))
                       .range_by_score())
        expected = {c["id"] for c in customers
                    if segment.includes(AccountStatus(c["account_status"]))}
        assert set(members) == expected, segment
        for customer_id, value in members.items():
            assert value == float(summaries[customer_id]["lifetime_value"])
    top = await patterns.top_customers(hs_cache, "acme", n=5)
    assert [c for c, _ in top] == best_ids[:5]
    # Nothing of the other tenant was written.
    assert await patterns.top_customers(hs_cache, "globex") == []


async def test_work_order_warmer_and_the_high_priority_board(
    hs_db: LoadedDb, hs_cache: Cache
) -> None:
    for tenant in TENANTS:
        await run(hs_db, hs_cache, tenant, warmers.work_orders_warmer())
    for tenant in TENANTS:
        open_orders = await loaders.open_work_orders(hs_db.fetch, tenant)
        assert open_orders
        lists: dict[WorkOrderStatus, set[int]] = defaultdict(set)
        for o in open_orders:
            lists[o.status].add(o.id)
            assert await hs_cache.get(WORK_ORDER.key(tenant, work_order_id=o.id)) == o
        for status in WorkOrderStatus:
            members = await hs_cache.zset(
                WORK_ORDERS_BY_STATUS.key(tenant, status=status)).range_by_score()
            assert {m for m, _ in members} == lists[status], (tenant, status)
        board = await patterns.high_priority_work_orders(hs_cache, tenant, limit=10)
        actionable = [o for o in open_orders if o.status in patterns.ACTIONABLE_STATUSES]
        expected = sorted(actionable, key=lambda o: (-score_of(o), o.id))[:10]
        assert [r.order for r in board] == expected


async def test_schedule_warmer_for_today(hs_db: LoadedDb, hs_cache: Cache) -> None:
    await run(hs_db, hs_cache, "acme", warmers.schedule_warmer(lambda: TODAY))
    today = await loaders.day_appointments(hs_db.fetch, "acme", TODAY)
    assert today, "the generated data puts appointments on the reference day"
    by_tech: dict[int, list[Any]] = defaultdict(list)
    for o in today:
        assert o.assigned_technician_id is not None
        by_tech[o.assigned_technician_id].append(o)
    for technician_id, mine in by_tech.items():
        got = await patterns.technician_day(
            hs_cache, "acme", technician_id=technician_id, day=TODAY)
        expected = sorted(mine, key=lambda o: (o.scheduled_at, o.id))
        assert [at for _, at in got] == [o.scheduled_at for o in expected]
        assert {wo for wo, _ in got} == {o.id for o in mine}
    first = today[0]
    near = await patterns.appointments_near(
        hs_cache, "acme", day=TODAY, longitude=first.longitude, latitude=first.latitude,
        radius_m=200_000)
    assert {wo for wo, _ in near} == {o.id for o in today}
    assert near[0][1] <= 1.0  # the appointment at the point itself comes first


async def test_service_area_warmer(hs_db: LoadedDb, hs_cache: Cache) -> None:
    await run(hs_db, hs_cache, "globex", warmers.service_areas_warmer())
    areas = await loaders.service_area_metrics(hs_db.fetch, "globex")
    assert len(areas) >= 2
    for a in areas:
        near = await patterns.nearest_service_areas(
            hs_cache, "globex", longitude=a.center_longitude, latitude=a.center_latitude,
            radius_m=100_000, count=1)
        assert near[0].area_id == a.area_id
        assert near[0].metrics == a


# --------------------------------------------------------------------------- races

Change = Callable[[LoadedDb, CacheKey[Any]], Awaitable[Any]]


async def _redescribe(db: LoadedDb, key: CacheKey[Any]) -> Any:
    await db.conn.execute(
        "UPDATE hs.work_orders SET description = 'changed while warming', updated_at = now() "
        "WHERE tenant_id = $1 AND id = $2", key.tenant, key.params["work_order_id"])
    return "changed while warming"


async def _rephone(db: LoadedDb, key: CacheKey[Any]) -> Any:
    await db.conn.execute(
        "UPDATE hs.customers SET phone = '+1-555-000-0001', updated_at = now() "
        "WHERE tenant_id = $1 AND id = $2", key.tenant, key.params["customer_id"])
    return "+1-555-000-0001"


async def _cancel_one(db: LoadedDb, key: CacheKey[Any]) -> Any:
    status = key.params["status"]
    assert isinstance(status, WorkOrderStatus)
    return await db.conn.fetchval(
        "UPDATE hs.work_orders SET status = 'cancelled', updated_at = now() "
        "WHERE tenant_id = $1 AND id = (SELECT min(id) FROM hs.work_orders "
        "WHERE tenant_id = $1 AND status = $2) RETURNING id", key.tenant, status.value)


async def _move_area(db: LoadedDb, key: CacheKey[Any]) -> Any:
    return await db.conn.fetchrow(
        "UPDATE hs.service_areas SET center_longitude = center_longitude + 0.5 "
        "WHERE tenant_id = $1 AND id = (SELECT min(id) FROM hs.service_areas "
        "WHERE tenant_id = $1) RETURNING id, center_longitude", key.tenant)


def _new_description(entry: Any, changed: Any) -> bool:
    return bool(entry.description == changed)


def _new_phone(entry: Any, changed: Any) -> bool:
    return bool(entry.phone == changed)


def _without_cancelled(entry: Any, changed: Any) -> bool:
    return changed is not None and changed not in entry


def _area_moved(entry: Any, changed: Any) -> bool:
    return bool(abs(entry[changed["id"]][0] - changed["center_longitude"]) < 1e-4)


@pytest.mark.parametrize(
    ("warmer", "batch", "pick", "change", "shows"),
    [
        # value: a work order
        (warmers.work_orders_warmer(), 0, None, _redescribe, _new_description),
        # hash: a customer
        (warmers.customers_warmer(top=10), 0, None, _rephone, _new_phone),
        # sorted set: the scheduled work orders
        (warmers.work_orders_warmer(), 1,
         WORK_ORDERS_BY_STATUS.key("acme", status=WorkOrderStatus.SCHEDULED),
         _cancel_one, _without_cancelled),
        # geo: the service area centres
        (warmers.service_areas_warmer(), 1, SERVICE_AREA_GEO.key("acme"), _move_area,
         _area_moved),
    ],
    ids=["value", "hash", "zset", "geo"],
)
async def test_a_row_changed_between_the_lease_and_the_write_is_not_written(
    hs_db: LoadedDb, hs_cache: Cache, warmer: Warmer, batch: int,
    pick: CacheKey[Any] | None, change: Change, shows: Callable[[Any, Any], bool],
) -> None:
    chosen = (await batches_of(hs_db, hs_cache, "acme", warmer))[batch]
    victim = chosen.keys[0] if pick is None else pick
    assert victim in chosen.keys
    changed: list[Any] = []

    async def load_then_change(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        entries = await chosen.load(leased)  # the rows, read under the leases...
        # ...then a change commits and its invalidation lands (what the worker does).
        changed.append(await change(hs_db, victim))
        await hs_cache.delete(victim)
        return entries

    outcome = await warm(hs_cache, WarmBatch(chosen.keys, load_then_change, "racing"))
    assert outcome.rejected >= 1
    assert outcome.filled == len(chosen.keys) - outcome.rejected
    # The next read-through loads the changed row.
    loads = 0
    loader = entry_loader(hs_db.fetch, victim)

    async def counted() -> Any:
        nonlocal loads
        loads += 1
        return await loader()

    entry = await read_through(hs_cache, victim, counted)
    assert loads == 1
    assert shows(entry, changed[0]), entry


# --------------------------------------------------------------------------- report loaders


async def test_report_loaders_through_get_or_load(hs_db: LoadedDb, hs_cache: Cache) -> None:
    technician = await hs_db.conn.fetchval(
        "SELECT technician_id FROM hs.technician_performance WHERE tenant_id = 'acme' "
        "ORDER BY total_jobs DESC LIMIT 1")
    perf = await hs_cache.get_or_load(
        TECHNICIAN_PERFORMANCE.key("acme", technician_id=technician),
        lambda: loaders.technician_performance(hs_db.fetch, "acme", technician))
    assert perf.technician_id == technician
    assert perf.total_jobs > 0
    assert await hs_cache.get(TECHNICIAN_PERFORMANCE.key("acme", technician_id=technician)) == perf
    with pytest.raises(loaders.MissingRow, match="technician_performance"):
        await loaders.technician_performance(hs_db.fetch, "acme", 10_000)
    day = await hs_db.conn.fetchval(
        "SELECT max(report_date) FROM hs.financial_daily WHERE tenant_id = 'acme'")
    report = await hs_cache.get_or_load(
        FINANCIAL_DAILY.key("acme", report_date=day),
        lambda: loaders.financial_day(hs_db.fetch, "acme", day))
    assert report.report_date == day
    assert report.invoice_count > 0
    quiet = await loaders.financial_day(hs_db.fetch, "acme", dt.date(1999, 1, 1))
    assert quiet.invoice_count == 0
    assert quiet.net_revenue == decimal.Decimal("0.00")
    summary = await loaders.customer_summary(hs_db.fetch, "acme", 1)
    assert summary.customer_id == 1
    with pytest.raises(loaders.MissingRow):
        await loaders.customer_summary(hs_db.fetch, "acme", 10_000)
