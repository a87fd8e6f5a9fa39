"""Against real PostgreSQL and Redis: the VIN check in SQL agrees with Python, the
ledger trigger keeps stock, loaders compute the formulas from the rows, warmers fill
the cache (through :func:`thorbis_cache.warming.warm`), and the patterns answer from it
(low stock through the sorted sets)."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest
from auto_testing import TENANTS, LoadedDb, today, warm_tenant
from thorbis_cache import Cache

from thorbis_automotive import datagen, inventory, labor, loaders, patterns
from thorbis_automotive.vin import CheckDigitRule, is_valid_vin

SAMPLES = ["1M8GDM9AXKP042788", "1M8GDM9A1KP042788", "WVWZZZ1JZXW000001", "1HGCM82633A004352",
           "1HGCM82633A00435", "1HGCM82633A0043O2", "1hgcm82633a004352", "5YJ3E1EA7KF000000"]


async def test_sql_vin_check_agrees_with_python(auto_db: LoadedDb) -> None:
    for vin in SAMPLES + [r["vin"] for r in auto_db.data.records("vehicles")]:
        ok = await auto_db.conn.fetchval("SELECT auto.vin_is_valid($1)", vin)
        assert ok is is_valid_vin(vin, CheckDigitRule.NORTH_AMERICA), vin
    with pytest.raises(asyncpg.CheckViolationError, match="vehicles_vin_valid"):
        await auto_db.conn.execute(
            "INSERT INTO auto.vehicles (tenant_id, vin, make, model, model_year) "
            "VALUES ('acme', '1M8GDM9A1KP042788', 'X', 'Y', 2020)")


async def test_the_ledger_trigger_keeps_stock(auto_db: LoadedDb) -> None:
    rows = await auto_db.conn.fetch("SELECT tenant_id, part_number, on_hand FROM auto.parts")
    assert {(r["tenant_id"], r["part_number"]): r["on_hand"] for r in rows} == \
        auto_db.data.on_hand()
    tenant, number = rows[0]["tenant_id"], rows[0]["part_number"]
    await auto_db.conn.execute(
        "INSERT INTO auto.stock_movements (tenant_id, id, part_number, quantity, reason) "
        "VALUES ($1, 1000001, $2, 7, 'receipt'), ($1, 1000002, $2, -2, 'issue')",
        tenant, number)
    assert await auto_db.conn.fetchval(
        "SELECT on_hand FROM auto.parts WHERE tenant_id = $1 AND part_number = $2",
        tenant, number) == rows[0]["on_hand"] + 5


async def test_part_loader_applies_the_reorder_formula(auto_db: LoadedDb) -> None:
    as_of = today()
    parts = await loaders.all_parts(auto_db.fetch, "acme", as_of=as_of)
    assert len(parts) == len([r for r in auto_db.data.records("parts") if r["tenant_id"] == "acme"])
    start = dt.datetime.combine(as_of - dt.timedelta(days=90), dt.time(), dt.UTC)
    for part in parts:
        issues = [(m["moved_at"].date(), -m["quantity"])
                  for m in auto_db.data.records("stock_movements")
                  if m["tenant_id"] == "acme" and m["part_number"] == part.part_number
                  and m["reason"] == "issue" and m["moved_at"] >= start]
        stats = inventory.demand_stats(inventory.daily_demand(issues, as_of))
        assert part.mean_daily_demand == pytest.approx(stats.mean)
        assert part.demand_std == pytest.approx(stats.std)
        assert part.reorder_point == inventory.reorder_point(
            stats, part.lead_time_days, part.service_level_z)
        assert part.demand_forecast_7d == pytest.approx(7 * stats.mean)
        assert part.on_hand == auto_db.data.on_hand()[("acme", part.part_number)]
    assert any(p.reorder_point > 0 for p in parts)


async def test_history_and_labor_loaders(auto_db: LoadedDb) -> None:
    vin = next(r["vin"] for r in auto_db.data.records("vehicles") if r["tenant_id"] == "acme")
    history = await loaders.vehicle_history(auto_db.fetch, "acme", vin.lower())
    done = [r for r in auto_db.data.records("repair_orders")
            if r["tenant_id"] == "acme" and r["vin"] == vin and r["status"] == "completed"]
    assert [s.repair_order_id for s in history.services] == [r["id"] for r in done]
    assert len(history.schedule) == 8
    assert history.miles_per_day is not None
    with pytest.raises(loaders.MissingRow):
        await loaders.vehicle_history(auto_db.fetch, "globex", vin)  # another tenant's VIN
    codes = [code for code, *_ in datagen.SERVICE_CATALOGUE]
    seasonalities = await loaders.labor_seasonalities(auto_db.fetch, "acme", codes)
    assert [s.service_type for s in seasonalities] == codes
    for seasonality in seasonalities:
        rows = await auto_db.conn.fetch(
            "SELECT month, jobs, labor_hours FROM auto.labor_monthly "
            "WHERE tenant_id = 'acme' AND service_type = $1", seasonality.service_type)
        monthly = {r["month"]: (r["jobs"], float(r["labor_hours"])) for r in rows}
        assert seasonality.monthly_factors == labor.seasonal_factors(monthly)
        assert seasonality.jobs == sum(n for n, _ in monthly.values())
    assert any(s.jobs > 0 for s in seasonalities)


async def test_datagen_is_deterministic_and_linear() -> None:
    ref = dt.date(2024, 6, 1)
    a = datagen.generate(TENANTS, 10, seed=3, reference=ref)
    assert a == datagen.generate(TENANTS, 10, seed=3, reference=ref)
    # A tenant's rows do not depend on the other tenants generated.
    alone = datagen.generate(["acme"], 10, seed=3, reference=ref)
    assert alone.rows("vehicles") == tuple(r for r in a.rows("vehicles") if r[0] == "acme")
    double = datagen.generate(TENANTS, 20, seed=3, reference=ref).counts()
    for table, n in a.counts().items():
        assert n <= double[table] <= 3 * n, table
    assert all(m["moved_at"] < a.reference for m in a.records("stock_movements"))


async def test_warmers_fill_and_patterns_answer(auto_db: LoadedDb, auto_cache: Cache) -> None:
    outcome = await warm_tenant(auto_cache, auto_db.fetch, "acme")
    assert outcome.filled > 0
    assert (outcome.rejected, outcome.busy, outcome.absent) == (0, 0, 0)
    parts = {p.part_number: p for p in await loaders.all_parts(auto_db.fetch, "acme")}
    # Low stock: at or below the reorder point, lowest margin first, from the margin set.
    low = await patterns.low_stock(auto_cache, "acme", limit=1000)
    expected = sorted((p.on_hand - p.reorder_point, n) for n, p in parts.items()
                      if p.on_hand <= p.reorder_point)
    assert [(x.score, x.part_number) for x in low] == [(float(s), n) for s, n in expected]
    assert all(x.part == parts[x.part_number] for x in low)
    few = await patterns.low_stock(auto_cache, "acme", at_most=15, limit=3)
    assert [x.part_number for x in few] == [n for _, n in sorted(
        (p.on_hand, n) for n, p in parts.items() if p.on_hand <= 15)][:3]
    assert await patterns.low_stock(auto_cache, "globex") == []  # nothing warmed there
    # Make/model sets by year.
    v = next(r for r in auto_db.data.records("vehicles") if r["tenant_id"] == "acme")
    found = await patterns.vehicles_of_model(auto_cache, "acme", make=v["make"],
                                             model=v["model"], min_year=v["model_year"],
                                             max_year=v["model_year"])
    assert (v["vin"], v["model_year"]) in found
    assert all(year == v["model_year"] for _, year in found)
    # A labor quote for July from the cached estimate.
    quote = await patterns.labor_quote(auto_cache, "acme", service_type="ac_service", month=7)
    assert quote is not None
    kind = await loaders.service_type(auto_db.fetch, "acme", "ac_service")
    seasonality = await loaders.labor_seasonality(auto_db.fetch, "acme", "ac_service")
    assert quote.hours == pytest.approx(kind.standard_hours * seasonality.monthly_factors[6])


async def test_view_rows_read_through_the_cache(auto_db: LoadedDb, auto_standalone_cache: Cache
                                                ) -> None:
    cache = auto_standalone_cache
    number = next(r["part_number"] for r in auto_db.data.records("parts")
                  if r["tenant_id"] == "acme")
    from thorbis_automotive.schemas import BAY_BOARD, PART_DEMAND

    demand = await cache.get_or_load(PART_DEMAND.key("acme", part_number=number),
                                     lambda: loaders.part_demand(auto_db.fetch, "acme", number))
    assert demand.weeks
    assert sum(w.issued for w in demand.weeks) > 0
    assert await patterns.part_demand(cache, "acme", part_number=number) == demand
    day = max(r["completed_at"] for r in auto_db.data.records("repair_orders")
              if r["tenant_id"] == "acme" and r["completed_at"] is not None).date()
    board = await cache.get_or_load(BAY_BOARD.key("acme", day=day),
                                    lambda: loaders.bay_board(auto_db.fetch, "acme", day))
    assert board.bays
    assert all(b.utilisation == pytest.approx(b.labor_hours / b.capacity_hours,
                                                             abs=1e-4) for b in board.bays)
    # The view's refresh tag drops the cached rows.
    await cache.invalidate_tags("acme", ["auto.parts_demand"])
    assert await patterns.part_demand(cache, "acme", part_number=number) is None
    assert await patterns.bay_board(cache, "acme", day=day) == board
