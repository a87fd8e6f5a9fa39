"""The plugin's SQL on a real PostgreSQL: tables and views apply idempotently, the views
refresh (also concurrently), and their contents equal the same aggregates computed in
Python from the generated rows -- which would catch the seed's join fan-out, tenant
mixing and time-zone bucketing."""

from __future__ import annotations

import datetime as dt
import decimal
from collections import Counter, defaultdict
from typing import Any

import asyncpg
import pytest
from hs_testing import TENANTS, LoadedDb, create_schema

from thorbis_home_services import datagen
from thorbis_home_services.plugin import register_materialized_views, register_sql
from thorbis_home_services.views import ALL_VIEWS

ZERO = decimal.Decimal(0)
FIELD_ROLES = {"technician", "senior_technician", "field_supervisor"}


def window_start(data: datagen.Dataset) -> dt.datetime:
    """The views' 90-day window start (the data's reference is today's UTC midnight)."""
    return data.reference - dt.timedelta(days=90)


def by_key(rows: list[Any], *cols: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r[c] for c in cols): dict(r) for r in rows}


# --------------------------------------------------------------------------- applying


async def test_sql_and_views_apply_twice_on_a_fresh_database(thorbis_pg_dsn: str) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        for _ in range(2):
            for sql_script in register_sql():
                await conn.execute(sql_script.sql)
            for view in register_materialized_views():
                for statement in view.create_sql():
                    await conn.execute(statement)
        tables = {r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'hs' AND c.relkind = 'r'")}
        assert tables == set(datagen.TABLES)
        views = {r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'hs' AND c.relkind = 'm'")}
        assert views == {v.relation for v in ALL_VIEWS}
    finally:
        await conn.close()


async def test_every_table_is_keyed_by_tenant(thorbis_pg_dsn: str) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await create_schema(conn)
        rows = await conn.fetch(
            """SELECT c.relname, a.attname, a.attnotnull,
                      (SELECT pg_get_constraintdef(co.oid) FROM pg_constraint co
                        WHERE co.conrelid = c.oid AND co.contype = 'p') AS pk
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                WHERE n.nspname = 'hs' AND c.relkind = 'r'""")
        assert {r["relname"] for r in rows} == set(datagen.TABLES)
        for r in rows:
            assert r["attnotnull"], r["relname"]
            assert r["pk"] == "PRIMARY KEY (tenant_id, id)", r["relname"]
        foreign = await conn.fetch(
            """SELECT pg_get_constraintdef(co.oid) AS def FROM pg_constraint co
                 JOIN pg_namespace n ON n.oid = co.connamespace
                WHERE n.nspname = 'hs' AND co.contype = 'f'""")
        assert foreign
        assert all(r["def"].startswith("FOREIGN KEY (tenant_id, ") for r in foreign)
        # Every index of the tables leads with tenant_id.
        indexes = await conn.fetch(
            """SELECT indexname, indexdef FROM pg_indexes
                WHERE schemaname = 'hs' AND tablename = ANY($1::text[])""",
            list(datagen.TABLES))
        assert all("(tenant_id" in r["indexdef"] for r in indexes), indexes
    finally:
        await conn.close()


async def test_a_row_cannot_reference_another_tenants_row(thorbis_pg_dsn: str) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await create_schema(conn)
        now = dt.datetime.now(dt.UTC)
        await conn.execute(
            "INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, "
            "customer_type, account_status, payment_status, longitude, latitude) VALUES "
            "('globex', 10000, 'G', 'X', 'g@x', '1', 'residential', 'active', 'current', 0, 0)")
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO hs.work_orders (tenant_id, id, customer_id, status, priority, "
                "service_type, scheduled_at, longitude, latitude) VALUES "
                "('acme', 1, 10000, 'pending', 'low', 'x', $1, 0, 0)", now)
    finally:
        await conn.close()


async def test_scheduled_day_is_the_utc_day_whatever_the_session_time_zone(
    thorbis_pg_dsn: str,
) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await create_schema(conn)
        await conn.execute("SET TimeZone = 'Pacific/Kiritimati'")  # UTC+14
        data = datagen.generate(["acme"], 5, reference=dt.date(2024, 6, 3))
        await datagen.load(conn, ["acme"], 5, reference=dt.date(2024, 6, 3))
        rows = await conn.fetch("SELECT id, scheduled_at, scheduled_day FROM hs.work_orders")
        assert len(rows) == len(data.work_orders) > 0
        for r in rows:
            assert r["scheduled_day"] == r["scheduled_at"].astimezone(dt.UTC).date()
    finally:
        await conn.close()


async def test_sql_inserts_load_the_same_rows_as_copy(thorbis_pg_dsn: str) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await create_schema(conn)
        data = datagen.generate(["acme"], 20, seed=3, reference=dt.date(2024, 6, 3))
        for statement in datagen.sql_inserts(data):
            await conn.execute(statement)
        for table in datagen.TABLES:
            cols = ", ".join(datagen.COLUMNS[table])
            got = [tuple(r) for r in await conn.fetch(
                f"SELECT {cols} FROM hs.{table} ORDER BY tenant_id, id")]  # noqa: S608
            assert got == list(data.rows(table)), table
    finally:
        await conn.close()


# --------------------------------------------------------------------------- loading


async def test_load_copies_every_row(hs_db: LoadedDb) -> None:
    for table, count in hs_db.data.counts().items():
        assert count > 0, table
        got = await hs_db.conn.fetchval(f"SELECT count(*) FROM hs.{table}")  # noqa: S608
        assert got == count, table
    tenants = {r[0] for r in await hs_db.conn.fetch("SELECT DISTINCT tenant_id FROM hs.customers")}
    assert tenants == set(TENANTS)


# --------------------------------------------------------------------------- views


async def test_customer_summary_matches_the_base_tables(hs_db: LoadedDb) -> None:
    data = hs_db.data
    orders: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    order_customer: dict[tuple[str, int], int] = {}
    for wo in data.records("work_orders"):
        orders[wo["tenant_id"], wo["customer_id"]].append(wo)
        order_customer[wo["tenant_id"], wo["id"]] = wo["customer_id"]
    revenue: Counter[tuple[str, int]] = Counter()
    for inv in data.records("invoices"):
        if inv["status"] != "void":
            revenue[inv["tenant_id"], order_customer[inv["tenant_id"], inv["work_order_id"]]] += (
                inv["total_amount"])
    rows = by_key(await hs_db.conn.fetch("SELECT * FROM hs.customer_summary"),
                  "tenant_id", "customer_id")
    assert len(rows) == len(data.customers)
    multi_invoice = 0
    for c in data.records("customers"):
        key = (c["tenant_id"], c["id"])
        row = rows[key]
        mine = orders[key]
        completed = [o for o in mine if o["status"] == "completed"]
        assert row["total_work_orders"] == len(mine), key
        assert row["completed_orders"] == len(completed), key
        assert row["lifetime_value"] == revenue.get(key, ZERO), key
        assert row["last_service_at"] == max((o["completed_at"] for o in completed), default=None)
        assert row["account_status"] == c["account_status"]
    for _, n in Counter((i["tenant_id"], i["work_order_id"])
                        for i in data.records("invoices")).items():
        multi_invoice += n > 1
    # The data set exercises the fan-out the seed's join got wrong.
    assert multi_invoice > 0


async def test_financial_daily_matches_the_invoices_by_utc_day(hs_db: LoadedDb) -> None:
    data = hs_db.data
    start = window_start(data)
    expected: dict[tuple[str, dt.date], list[dict[str, Any]]] = defaultdict(list)
    for inv in data.records("invoices"):
        if inv["status"] != "void" and inv["created_at"] >= start:
            expected[inv["tenant_id"], inv["created_at"].astimezone(dt.UTC).date()].append(inv)
    # Bucketing must not follow the session's time zone.
    await hs_db.conn.execute("SET TimeZone = 'America/Los_Angeles'")
    await hs_db.conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY hs.financial_daily")
    rows = by_key(await hs_db.conn.fetch("SELECT * FROM hs.financial_daily"),
                  "tenant_id", "report_date")
    assert set(rows) == set(expected)
    for key, invoices in expected.items():
        row = rows[key]
        totals = [i["total_amount"] for i in invoices]
        paid = [i["total_amount"] for i in invoices if i["status"] == "paid"]
        assert row["invoice_count"] == len(invoices)
        assert row["gross_revenue"] == sum(i["subtotal_amount"] for i in invoices)
        assert row["total_tax"] == sum(i["tax_amount"] for i in invoices)
        assert row["net_revenue"] == sum(totals)
        assert row["paid_invoices"] == len(paid)
        assert row["collected_revenue"] == sum(paid, ZERO)
        assert row["max_invoice_amount"] == max(totals)
        assert row["min_invoice_amount"] == min(totals)


def _per_order(data: datagen.Dataset) -> tuple[Counter[tuple[str, int]],
                                                dict[tuple[str, int], list[decimal.Decimal]]]:
    revenue: Counter[tuple[str, int]] = Counter()
    for inv in data.records("invoices"):
        if inv["status"] != "void":
            revenue[inv["tenant_id"], inv["work_order_id"]] += inv["total_amount"]
    ratings: dict[tuple[str, int], list[decimal.Decimal]] = defaultdict(list)
    for q in data.records("quality_control_inspections"):
        ratings[q["tenant_id"], q["work_order_id"]].append(q["overall_rating"])
    return revenue, ratings


async def test_technician_performance_matches_the_base_tables(hs_db: LoadedDb) -> None:
    data = hs_db.data
    start = window_start(data)
    revenue, ratings = _per_order(data)
    jobs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for wo in data.records("work_orders"):
        if wo["assigned_technician_id"] is not None and wo["created_at"] >= start:
            jobs[wo["tenant_id"], wo["assigned_technician_id"]].append(wo)
    rows = by_key(await hs_db.conn.fetch("SELECT * FROM hs.technician_performance"),
                  "tenant_id", "technician_id")
    field = [t for t in data.records("technicians") if t["role"] in FIELD_ROLES]
    # Every field technician, with or without recent jobs; no dispatcher.
    assert set(rows) == {(t["tenant_id"], t["id"]) for t in field}
    assert len(field) < len(data.technicians)
    for key, row in rows.items():
        mine = jobs[key]
        completed = [j for j in mine if j["status"] == "completed"]
        assert row["total_jobs"] == len(mine), key
        assert row["completed_jobs"] == len(completed), key
        assert row["revenue_generated"] == sum((revenue[key[0], j["id"]] for j in mine), ZERO)
        mine_ratings = [r for j in mine for r in ratings[key[0], j["id"]]]
        if mine_ratings:
            assert row["avg_quality_rating"] == pytest.approx(
                float(sum(mine_ratings) / len(mine_ratings)))
        else:
            assert row["avg_quality_rating"] is None
        high = sum(1 for j in mine if ratings[key[0], j["id"]]
                   and sum(ratings[key[0], j["id"]]) / len(ratings[key[0], j["id"]]) >= 4.5)
        assert row["high_quality_jobs"] == high, key
        if mine:
            assert row["completion_rate"] == round(
                decimal.Decimal(len(completed)) / len(mine) * 100, 2)
        else:
            assert row["completion_rate"] is None


async def test_service_area_metrics_match_the_base_tables(hs_db: LoadedDb) -> None:
    data = hs_db.data
    start = window_start(data)
    revenue, _ = _per_order(data)
    orders: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for wo in data.records("work_orders"):
        if wo["service_area_id"] is not None and wo["created_at"] >= start:
            orders[wo["tenant_id"], wo["service_area_id"]].append(wo)
    rows = by_key(await hs_db.conn.fetch("SELECT * FROM hs.service_area_metrics"),
                  "tenant_id", "service_area_id")
    assert set(rows) == {(a["tenant_id"], a["id"]) for a in data.records("service_areas")}
    for key, row in rows.items():
        mine = orders[key]
        assert row["total_work_orders"] == len(mine), key
        assert row["emergency_calls"] == sum(o["priority"] == "emergency" for o in mine)
        assert row["unique_customers"] == len({o["customer_id"] for o in mine})
        assert row["area_revenue"] == sum((revenue[key[0], o["id"]] for o in mine), ZERO)
        travel = [o["travel_time_minutes"] for o in mine if o["travel_time_minutes"] is not None]
        if travel:
            assert row["avg_travel_time"] == pytest.approx(sum(travel) / len(travel))


async def test_views_refresh_concurrently_and_see_new_rows(hs_db: LoadedDb) -> None:
    conn = hs_db.conn
    for view in ALL_VIEWS:
        assert view.refresh.concurrently
        await conn.execute(f"REFRESH MATERIALIZED VIEW {view.name}")
        await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view.name}")
    before = await conn.fetchrow(
        "SELECT lifetime_value, account_status FROM hs.customer_summary "
        "WHERE tenant_id = 'acme' AND customer_id = 1")
    wo = await conn.fetchrow(
        "SELECT id FROM hs.work_orders WHERE tenant_id = 'acme' AND customer_id = 1 LIMIT 1")
    if wo is None:  # customer 1 has no order in this data set: give it one
        now = dt.datetime.now(dt.UTC)
        await conn.execute(
            "INSERT INTO hs.work_orders (tenant_id, id, customer_id, status, priority, "
            "service_type, scheduled_at, completed_at, longitude, latitude) "
            "VALUES ('acme', 99999, 1, 'completed', 'low', 'x', $1, $1, 0, 0)", now)
        wo_id = 99999
    else:
        wo_id = wo["id"]
    await conn.execute(
        "INSERT INTO hs.invoices (tenant_id, id, work_order_id, customer_id, status, "
        "subtotal_amount, tax_amount, total_amount) "
        "VALUES ('acme', 99999, $1, 1, 'paid', 100, 0, 100)", wo_id)
    await conn.execute(
        "UPDATE hs.customers SET account_status = 'suspended' "
        "WHERE tenant_id = 'acme' AND id = 1")
    await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY hs.customer_summary")
    after = await conn.fetchrow(
        "SELECT lifetime_value, account_status FROM hs.customer_summary "
        "WHERE tenant_id = 'acme' AND customer_id = 1")
    assert after["lifetime_value"] == before["lifetime_value"] + 100
    assert after["account_status"] == "suspended"
    # The other tenant's customer 1 is untouched.
    other = await conn.fetchval(
        "SELECT count(*) FROM hs.invoices WHERE tenant_id = 'globex' AND id = 99999")
    assert other == 0


async def test_every_view_has_its_declared_unique_index(hs_db: LoadedDb) -> None:
    for view in ALL_VIEWS:
        rows = await hs_db.conn.fetch(
            """SELECT pg_get_indexdef(i.indexrelid) AS def, i.indisunique AS uniq
                 FROM pg_index i WHERE i.indrelid = $1::regclass""", view.name)
        unique = [r["def"] for r in rows if r["uniq"]]
        assert unique == [
            f"CREATE UNIQUE INDEX {view.relation}_uniq ON {view.name} USING btree "
            f"({', '.join(view.unique_index)})"
        ]
        assert len(rows) == 1 + len(view.indexes)
