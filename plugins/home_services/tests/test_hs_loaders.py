"""The single-key loaders (what read-through calls) and the warmers' ids and batched
queries, on a real PostgreSQL: each answer equals what the generated rows say, for its
tenant only; a missing entity raises MissingRow."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import pytest
from hs_testing import TENANTS, LoadedDb

from thorbis_home_services import loaders, rows
from thorbis_home_services.models import AccountStatus, CustomerSegment, WorkOrderStatus
from thorbis_home_services.scoring import score_of

TODAY = dt.datetime.now(dt.UTC).date()
NOWHERE = 10_000_000  # an id no generated row has


def records(db: LoadedDb, table: str, tenant: str) -> list[dict[str, Any]]:
    return [r for r in db.data.records(table) if r["tenant_id"] == tenant]


def utc_day(at: dt.datetime) -> dt.date:
    return at.astimezone(dt.UTC).date()


@pytest.mark.parametrize("tenant", TENANTS)
async def test_customer_and_work_order_entities(hs_db: LoadedDb, tenant: str) -> None:
    for record in records(hs_db, "customers", tenant)[:10]:
        assert await loaders.customer(hs_db.fetch, tenant, record["id"]) == rows.customer(record)
    for record in records(hs_db, "work_orders", tenant)[:10]:
        got = await loaders.work_order(hs_db.fetch, tenant, record["id"])
        assert got == rows.work_order(record)
    with pytest.raises(loaders.MissingRow, match=r"hs\.customer"):
        await loaders.customer(hs_db.fetch, tenant, NOWHERE)
    with pytest.raises(loaders.MissingRow, match=r"hs\.work_order"):
        await loaders.work_order(hs_db.fetch, tenant, NOWHERE)


async def test_entities_are_read_in_their_tenant_only(hs_db: LoadedDb) -> None:
    # Ids repeat across tenants: the same id is another tenant's row.
    acme = {r["id"]: r for r in records(hs_db, "customers", "acme")}
    globex = {r["id"]: r for r in records(hs_db, "customers", "globex")}
    shared = sorted(set(acme) & set(globex))
    assert shared
    for customer_id in shared[:5]:
        assert await loaders.customer(hs_db.fetch, "globex", customer_id) == rows.customer(
            globex[customer_id])
        assert rows.customer(acme[customer_id]) != rows.customer(globex[customer_id])


@pytest.mark.parametrize("tenant", TENANTS)
async def test_customer_lists(hs_db: LoadedDb, tenant: str) -> None:
    values = {r["customer_id"]: float(r["lifetime_value"]) for r in await hs_db.conn.fetch(
        "SELECT customer_id, lifetime_value FROM hs.customer_summary WHERE tenant_id = $1",
        tenant)}
    customers = records(hs_db, "customers", tenant)
    for segment in CustomerSegment:
        expected = {c["id"]: values[c["id"]] for c in customers
                    if segment.includes(AccountStatus(c["account_status"]))}
        assert await loaders.customer_list(hs_db.fetch, tenant, segment) == expected
    assert await loaders.customer_list(hs_db.fetch, tenant, CustomerSegment.VIP)
    # The ids warmers start from: the most valuable first, ties by id.
    best = sorted(values.items(), key=lambda cv: (-cv[1], cv[0]))
    assert await loaders.top_customer_ids(hs_db.fetch, tenant, 7) == [c for c, _ in best[:7]]


@pytest.mark.parametrize("tenant", TENANTS)
async def test_status_lists_are_scored_like_the_seed(hs_db: LoadedDb, tenant: str) -> None:
    orders = [rows.work_order(r) for r in records(hs_db, "work_orders", tenant)]
    for status in WorkOrderStatus:
        expected = {o.id: score_of(o) for o in orders if o.status is status}
        assert await loaders.work_orders_by_status(hs_db.fetch, tenant, status) == expected
    # Several lists in one query; a status without orders is an empty list.
    empty = [s for s in WorkOrderStatus if not any(o.status is s for o in orders)]
    both = await loaders.work_order_lists(hs_db.fetch, tenant, WorkOrderStatus)
    assert set(both) == set(WorkOrderStatus)
    assert all(both[s] == {} for s in empty)
    assert sum(len(m) for m in both.values()) == len(orders)
    assert await loaders.open_work_order_ids(hs_db.fetch, tenant) == sorted(
        o.id for o in orders if o.status.is_open)


@pytest.mark.parametrize("tenant", TENANTS)
async def test_schedules_and_the_day_index(hs_db: LoadedDb, tenant: str) -> None:
    today = [rows.work_order(r) for r in records(hs_db, "work_orders", tenant)
             if utc_day(r["scheduled_at"]) == TODAY and r["assigned_technician_id"] is not None
             and r["status"] != "cancelled"]
    assert today, "the generated data puts appointments on the reference day"
    by_tech: dict[int, dict[int, float]] = defaultdict(dict)
    for o in today:
        assert o.assigned_technician_id is not None
        by_tech[o.assigned_technician_id][o.id] = o.scheduled_at.timestamp()
    for technician_id, starts in by_tech.items():
        got = await loaders.technician_schedule(hs_db.fetch, tenant, technician_id, TODAY)
        assert got == starts
    assert await loaders.day_technician_ids(hs_db.fetch, tenant, TODAY) == sorted(by_tech)
    idle = max(r["id"] for r in records(hs_db, "technicians", tenant)) + 1
    assert await loaders.technician_schedule(hs_db.fetch, tenant, idle, TODAY) == {}
    batched = await loaders.technician_schedules(hs_db.fetch, tenant, TODAY, [*by_tech, idle])
    assert batched == {**by_tech, idle: {}}
    sites = await loaders.schedule_geo(hs_db.fetch, tenant, TODAY)
    assert sites == {o.id: (o.longitude, o.latitude) for o in today}
    assert await loaders.schedule_geo(hs_db.fetch, tenant, dt.date(1999, 1, 1)) == {}


@pytest.mark.parametrize("tenant", TENANTS)
async def test_service_history_is_the_whole_time_series(hs_db: LoadedDb, tenant: str) -> None:
    completed: dict[int, dict[int, float]] = defaultdict(dict)
    for r in records(hs_db, "work_orders", tenant):
        if r["status"] == "completed":
            completed[r["customer_id"]][r["id"]] = r["completed_at"].timestamp()
    customers = [c["id"] for c in records(hs_db, "customers", tenant)]
    for customer_id in customers:
        got = await loaders.service_history(hs_db.fetch, tenant, customer_id)
        assert got == completed.get(customer_id, {})
    assert any(len(s) >= 2 for s in completed.values())
    assert await loaders.service_history(hs_db.fetch, tenant, NOWHERE) == {}


@pytest.mark.parametrize("tenant", TENANTS)
async def test_service_areas_and_their_centres(hs_db: LoadedDb, tenant: str) -> None:
    every = await loaders.service_area_metrics(hs_db.fetch, tenant)
    assert len(every) >= 2
    for area in every:
        assert await loaders.service_area(hs_db.fetch, tenant, area.area_id) == area
    assert await loaders.service_area_ids(hs_db.fetch, tenant) == [a.area_id for a in every]
    assert await loaders.service_areas(hs_db.fetch, tenant, [every[-1].area_id, NOWHERE]) == [
        every[-1]]
    with pytest.raises(loaders.MissingRow, match=r"hs\.service_area"):
        await loaders.service_area(hs_db.fetch, tenant, NOWHERE)
    # The centres come from the table.
    table = {r["id"]: (r["center_longitude"], r["center_latitude"])
             for r in records(hs_db, "service_areas", tenant)}
    assert await loaders.service_area_geo(hs_db.fetch, tenant) == table
