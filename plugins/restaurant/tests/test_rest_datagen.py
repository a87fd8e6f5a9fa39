"""The data generator (deterministic, per-tenant, linear in size) and the SQL it feeds:
the copy triggers, both views refreshed concurrently, and view rows cached under the
tags the views drop after a refresh."""

from __future__ import annotations

import datetime as dt
import decimal

from rest_testing import LoadedDb
from thorbis_cache import Cache

from thorbis_restaurant import datagen, loaders, predict
from thorbis_restaurant.schemas import ITEM_SALES, MENU, TURNOVER_DAY
from thorbis_restaurant.views import ALL_VIEWS

REF = dt.date(2024, 6, 30)


def test_same_inputs_same_rows_and_tenants_independent() -> None:
    a = datagen.generate(["acme", "globex"], 1, seed=4, reference=REF)
    assert a == datagen.generate(["acme", "globex"], 1, seed=4, reference=REF)
    alone = datagen.generate(["globex"], 1, seed=4, reference=REF)
    for table in datagen.TABLES:
        assert [r for r in a.rows(table) if r[0] == "globex"] == list(alone.rows(table))
    assert datagen.generate(["acme"], 1, seed=5, reference=REF) != datagen.generate(
        ["acme"], 1, seed=4, reference=REF)


def test_rows_scale_linearly_with_locations() -> None:
    one = datagen.generate(["acme"], 1, seed=1, reference=REF).counts()
    three = datagen.generate(["acme"], 3, seed=1, reference=REF).counts()
    for table, n in one.items():
        if table == "menu_items":
            assert three[table] == n == datagen.CATALOGUE_SIZE  # the shared catalogue
        elif table != "order_items":
            assert three[table] == 3 * n, table
        else:
            assert 2.5 * n < three[table] < 3.5 * n  # 1-4 lines an order, drawn


async def test_triggers_views_and_view_rows_through_the_cache(
    rest_db: LoadedDb, rest_standalone_cache: Cache
) -> None:
    conn, cache = rest_db.conn, rest_standalone_cache
    mismatched = await conn.fetchval(
        "SELECT count(*) FROM rest.menu_entries e JOIN rest.menu_items i "
        "ON i.tenant_id = e.tenant_id AND i.id = e.item_id WHERE e.item_price <> i.base_price")
    assert mismatched == 0
    copies = await conn.fetchval(
        "SELECT count(*) FROM rest.order_items i JOIN rest.orders o "
        "ON o.tenant_id = i.tenant_id AND o.id = i.order_id "
        "WHERE (i.location_id, i.order_priority, i.order_status) "
        "IS DISTINCT FROM (o.location_id, o.priority, o.status)")
    assert copies == 0
    for view in ALL_VIEWS:
        await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view.name}")
        assert await conn.fetchval(f"SELECT count(*) FROM {view.name}") > 0  # noqa: S608

    # The sales view agrees with the orders it summarizes.
    today = loaders.utc_today()
    sold = await conn.fetchval(
        "SELECT COALESCE(sum(i.quantity), 0) FROM rest.order_items i JOIN rest.orders o "
        "ON o.tenant_id = i.tenant_id AND o.id = i.order_id WHERE o.tenant_id = 'acme' "
        "AND i.location_id = 1 AND i.item_id = 1 AND o.status <> 'cancelled' "
        "AND (o.placed_at AT TIME ZONE 'UTC')::date > $1::date - 7", today)
    sales = await cache.get_or_load(ITEM_SALES.key("acme", location_id=1, item_id=1),
                                    lambda: loaders.item_sales(rest_db.fetch, "acme", 1, 1))
    assert sales.quantity_7d == sold
    days = await rest_db.fetch(
        "SELECT sales_day, quantity FROM rest.item_sales_daily WHERE tenant_id = 'acme' "
        "AND location_id = 1 AND item_id = 1")
    assert sales.popularity == predict.popularity(
        [(d["sales_day"], d["quantity"]) for d in days], today)
    yesterday = today - dt.timedelta(days=1)
    turnover = await cache.get_or_load(
        TURNOVER_DAY.key("acme", location_id=1, day=yesterday),
        lambda: loaders.turnover_day(rest_db.fetch, "acme", 1, yesterday))
    assert turnover.seatings > 0
    assert turnover.tables == datagen.TABLES_PER_LOCATION
    menu = await cache.get_or_load(MENU.key("acme", menu_id=1),
                                   lambda: loaders.menu(rest_db.fetch, "acme", 1))

    # What a refresh of each view drops: its tags, carried by the cached copies.
    sales_view, turnover_view = ALL_VIEWS
    await cache.invalidate_tags("acme", sales_view.tags)
    assert await cache.get(ITEM_SALES.key("acme", location_id=1, item_id=1)) is None
    assert await cache.get(MENU.key("acme", menu_id=1)) is None  # prices derive from sales
    assert await cache.get(TURNOVER_DAY.key("acme", location_id=1, day=yesterday)) == turnover
    await cache.invalidate_tags("acme", turnover_view.tags)
    assert await cache.get(TURNOVER_DAY.key("acme", location_id=1, day=yesterday)) is None
    # Dynamic prices are the formula on the view's rows, within the documented bounds.
    for line in menu.lines:
        assert line.price == predict.dynamic_price(line.base_price, line.demand_ratio)
        half_cent = decimal.Decimal("0.005")
        assert (line.base_price * predict.FLOOR - half_cent <= line.price
                <= line.base_price * predict.CAP + half_cent)
