"""The loaders against real PostgreSQL: each single-key loader returns its key's whole
entry as the tables say (checked with queries written here, not the plugin's), raises
MissingRow for a key whose row does not exist, and equals its batched form -- so a
warmed entry and a read-through entry of the same rows are equal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable

import pytest
from rest_testing import LoadedDb
from thorbis_cache.errors import MissingRow

from thorbis_restaurant import availability, loaders
from thorbis_restaurant.models import OrderPriority, Station
from thorbis_restaurant.scoring import kitchen_score

ABSENT = 999_999


async def missing(read: Awaitable[object], what: str) -> None:
    """``read`` raises MissingRow naming the relation ``what``, acme and :data:`ABSENT`."""
    with pytest.raises(MissingRow) as err:
        await read
    assert (err.value.what, err.value.tenant, err.value.ident) == (what, "acme", ABSENT)


async def test_menu_is_its_rows_and_absent_menus_raise(rest_db: LoadedDb) -> None:
    db = rest_db
    menu = await loaders.menu(db.fetch, "acme", 2)
    rows = await db.conn.fetch(
        "SELECT e.item_id, e.position, i.base_price, i.name FROM rest.menu_entries e "
        "JOIN rest.menu_items i ON i.tenant_id = e.tenant_id AND i.id = e.item_id "
        "WHERE e.tenant_id = 'acme' AND e.menu_id = 2 ORDER BY e.position")
    assert [(line.item_id, line.position, line.base_price, line.name) for line in menu.lines] \
        == [tuple(r) for r in rows]
    assert (menu.menu_id, menu.location_id, menu.name) == (2, 1, "Dinner")
    # Another tenant's menu 2 is another menu.
    assert (await loaders.menu(db.fetch, "globex", 2)).lines != menu.lines
    await missing(loaders.menu(db.fetch, "acme", ABSENT), "rest.menus")
    batch = await loaders.menus(db.fetch, "acme", [1, 2, 3, ABSENT])
    assert sorted(batch) == [1, 2, 3]
    for menu_id, found in batch.items():
        assert found == await loaders.menu(db.fetch, "acme", menu_id, found.as_of)


async def test_menu_item_is_its_row(rest_db: LoadedDb) -> None:
    db = rest_db
    item = await loaders.menu_item(db.fetch, "acme", 7)
    row = await db.conn.fetchrow(
        "SELECT name, category, base_price, kitchen_station FROM rest.menu_items "
        "WHERE tenant_id = 'acme' AND id = 7")
    assert (item.name, item.category, item.base_price, item.kitchen_station.value) == tuple(row)
    await missing(loaders.menu_item(db.fetch, "acme", ABSENT), "rest.menu_items")


async def test_location_menus_empty_for_a_location_without_menus(rest_db: LoadedDb) -> None:
    db = rest_db
    assert await loaders.location_menus(db.fetch, "acme", 2) == {3: 3.0, 4: 4.0}
    await db.conn.execute("UPDATE rest.menus SET active = false "
                          "WHERE tenant_id = 'acme' AND id = 3")
    assert await loaders.location_menus(db.fetch, "acme", 2) == {4: 4.0}
    await db.conn.execute("INSERT INTO rest.locations (tenant_id, id, name) "
                          "VALUES ('acme', 50, 'empty')")
    assert await loaders.location_menus(db.fetch, "acme", 50) == {}
    await missing(loaders.location_menus(db.fetch, "acme", ABSENT),
                  "rest.locations")
    assert await loaders.location_menu_sets(db.fetch, "acme", [1, 2, 50, ABSENT]) == {
        1: {1: 1.0, 2: 2.0}, 2: {4: 4.0}, 50: {}}


async def test_menu_category_is_the_categorys_items_by_position(rest_db: LoadedDb) -> None:
    db = rest_db
    rows = await db.conn.fetch(
        "SELECT i.category, e.item_id, e.position FROM rest.menu_entries e "
        "JOIN rest.menu_items i ON i.tenant_id = e.tenant_id AND i.id = e.item_id "
        "WHERE e.tenant_id = 'acme' AND e.menu_id = 1")
    categories = {r["category"] for r in rows}
    assert len(categories) > 1
    for category in categories:
        expected = {r["item_id"]: float(r["position"]) for r in rows if r["category"] == category}
        assert await loaders.menu_category(db.fetch, "acme", 1, category) == expected
    # A category the menu does not list is an empty set of an existing menu...
    assert await loaders.menu_category(db.fetch, "acme", 1, "no such category") == {}
    # ...and a menu that does not exist is absent.
    await missing(loaders.menu_category(db.fetch, "acme", ABSENT, "mains"), "rest.menus")
    sets = await loaders.menu_category_sets(db.fetch, "acme", [1, 2, ABSENT], categories)
    assert set(sets) == {(m, c) for m in (1, 2) for c in categories}
    for (menu_id, category), members in sets.items():
        assert members == await loaders.menu_category(db.fetch, "acme", menu_id, category)


async def test_table_availability_counts_the_days_holding_reservations(
    rest_db: LoadedDb,
) -> None:
    db = rest_db
    day = db.data.reference + dt.timedelta(days=1)
    grid = await loaders.table_availability(db.fetch, "acme", 1, day)
    tables = await db.conn.fetch("SELECT id FROM rest.dining_tables "
                                 "WHERE tenant_id = 'acme' AND location_id = 1 AND active")
    holding = await db.conn.fetchval(
        "SELECT count(DISTINCT (slot, table_id)) FROM rest.reservations WHERE tenant_id = "
        "'acme' AND location_id = 1 AND day = $1 AND status IN ('booked', 'seated', "
        "'completed')", day)
    assert [t.table_id for t in grid.tables] == [r["id"] for r in tables]
    assert grid.booked_table_slots == holding > 0
    assert grid.total_table_slots == len(tables) * len(availability.DEFAULT_SLOTS)
    await db.conn.execute("INSERT INTO rest.locations (tenant_id, id, name) "
                          "VALUES ('acme', 50, 'no tables yet')")
    empty = await loaders.table_availability(db.fetch, "acme", 50, day)
    assert (empty.tables, empty.booked, empty.total_table_slots) == ([], {}, 0)
    await missing(loaders.table_availability(db.fetch, "acme", ABSENT, day),
                  "rest.locations")
    keys = [(loc, day + dt.timedelta(days=d)) for loc in (1, 2, ABSENT) for d in (0, 1)]
    grids = await loaders.table_availabilities(db.fetch, "acme", keys)
    assert set(grids) == {k for k in keys if k[0] != ABSENT}
    for (loc, when), found in grids.items():
        assert found == await loaders.table_availability(db.fetch, "acme", loc, when)


async def test_ticket_is_the_orders_lines(rest_db: LoadedDb) -> None:
    db = rest_db
    [order_id] = await loaders.open_order_ids(db.fetch, "acme", 1)
    ticket = await loaders.ticket(db.fetch, "acme", order_id)
    lines = await db.conn.fetch("SELECT line, item_id, quantity, station, done "
                                "FROM rest.order_items WHERE tenant_id = 'acme' AND "
                                "order_id = $1 ORDER BY line", order_id)
    assert [(x.line, x.item_id, x.quantity, x.station.value, x.done) for x in ticket.lines] \
        == [tuple(r) for r in lines]
    assert ticket.order_id == order_id
    # An order without lines exists: a ticket with nothing to cook, not an absent row.
    await db.conn.execute(
        "INSERT INTO rest.orders (tenant_id, id, location_id, status, placed_at) "
        "VALUES ('acme', 777777, 1, 'open', now())")
    assert (await loaders.ticket(db.fetch, "acme", 777777)).lines == []
    await missing(loaders.ticket(db.fetch, "acme", ABSENT), "rest.orders")


async def test_kitchen_queues_and_board_are_the_open_lines(rest_db: LoadedDb) -> None:
    db = rest_db
    rows = await db.conn.fetch(
        "SELECT DISTINCT o.id, o.priority, o.placed_at, i.station FROM rest.orders o "
        "JOIN rest.order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id "
        "WHERE o.tenant_id = 'acme' AND o.location_id = 1 AND o.status = 'open' "
        "AND NOT i.done")
    assert rows, "the data set has open orders with lines to cook"
    for station in Station:
        expected = {r["id"]: kitchen_score(OrderPriority(r["priority"]), r["placed_at"])
                    for r in rows if r["station"] == station.value}
        assert await loaders.kitchen_queue(db.fetch, "acme", 1, station) == expected
    board = await loaders.kitchen_board(db.fetch, "acme", 1)
    assert set(board) == {r["id"] for r in rows}
    await db.conn.execute("INSERT INTO rest.locations (tenant_id, id, name) "
                          "VALUES ('acme', 50, 'closed kitchen')")
    assert await loaders.kitchen_board(db.fetch, "acme", 50) == {}
    assert await loaders.kitchen_queue(db.fetch, "acme", 50, Station.GRILL) == {}
    for read in (loaders.kitchen_board(db.fetch, "acme", ABSENT),
                 loaders.kitchen_queue(db.fetch, "acme", ABSENT, Station.BAR)):
        await missing(read, "rest.locations")
    queues = await loaders.kitchen_queues(db.fetch, "acme", [1, 2, 50, ABSENT])
    assert set(queues) == {(loc, s) for loc in (1, 2, 50) for s in Station}
    assert loaders.boards_of(queues) == await loaders.kitchen_boards(db.fetch, "acme",
                                                                     [1, 2, 50, ABSENT])
    # The last line done takes an order off its board.
    order_id = next(iter(board))
    await db.conn.execute("UPDATE rest.order_items SET done = true "
                          "WHERE tenant_id = 'acme' AND order_id = $1", order_id)
    assert order_id not in await loaders.kitchen_board(db.fetch, "acme", 1)


async def test_view_readers_are_zeros_for_keys_without_view_rows(rest_db: LoadedDb) -> None:
    db = rest_db
    today = db.data.reference
    sold = await db.conn.fetchrow(
        "SELECT item_id, sum(quantity) AS q FROM rest.item_sales_daily WHERE tenant_id = "
        "'acme' AND location_id = 1 AND sales_day > $1::date - 28 AND sales_day <= $1 "
        "GROUP BY item_id ORDER BY item_id LIMIT 1", today)
    sales = await loaders.item_sales(db.fetch, "acme", 1, sold["item_id"], today)
    assert sales.quantity_28d == sold["q"] > 0
    nothing = await loaders.item_sales(db.fetch, "acme", 1, ABSENT, today)
    assert (nothing.quantity_28d, nothing.popularity) == (0, 0.0)
    quiet = await loaders.turnover_day(db.fetch, "acme", ABSENT, today)
    assert (quiet.seatings, quiet.avg_dining_minutes) == (0, None)
