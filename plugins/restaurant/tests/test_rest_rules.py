"""The invalidation rules end to end: committed changes in PostgreSQL, the capture
triggers, the outbox worker, real Redis. A price change drops exactly the menus that
list the item; a reservation drops its day's grid; an order's priority change drops the
station queues of its lines; and the demo's change is verified through the cache."""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rest_testing import TENANTS, CountingFetch, Live
from thorbis_cache.cache.keys import KeySchema
from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins.declarations import Fetch, Operation

from thorbis_restaurant import loaders, writers
from thorbis_restaurant.demo import DEMO
from thorbis_restaurant.models import Station
from thorbis_restaurant.rules import ALL_RULES, ITEM_DETAILS, MENU_ON_ENTRY_CHANGE
from thorbis_restaurant.schemas import (
    ALL_SCHEMAS,
    KITCHEN_ORDER,
    KITCHEN_QUEUE,
    MENU,
    MENU_CATEGORY,
    MENU_ITEM,
    TABLE_AVAILABILITY,
    TAGS,
)

SCHEMAS = {s.name: s for s in ALL_SCHEMAS}


def test_rules_target_own_schemas_with_exactly_their_parameters() -> None:
    names = [r.name for r in ALL_RULES]
    assert len(set(names)) == len(names)
    for rule in ALL_RULES:
        assert rule.name.startswith("rest.")
        assert rule.table.startswith("rest.")
        for target in rule.targets:
            assert (target.schema is None) != (target.tag is None), rule.name
            if target.tag is not None:
                assert target.tag in TAGS, (rule.name, target.tag)
            else:
                schema = SCHEMAS[target.schema or ""]
                assert set(target.params) == {p.name for p in schema.params}, rule.name


def test_every_cached_absence_is_dropped_by_an_insert_rule() -> None:
    negative = [s for s in ALL_SCHEMAS if s.negative_ttl is not None]
    assert {s.name for s in negative} == {MENU.name, MENU_ITEM.name, KITCHEN_ORDER.name}
    for schema in negative:
        covering = [r.name for r in ALL_RULES if Operation.INSERT in r.operations
                    for t in r.targets if t.schema == schema.name or t.tag in schema.tags]
        assert covering, f"{schema.name} caches absence but no rule fires on INSERT"


def test_no_rule_targets_a_view_mirror() -> None:
    mirrors = [s for s in ALL_SCHEMAS if s.mirrors is not None]
    assert {s.name: s.mirrors for s in mirrors} == {
        "rest.item_sales": "rest.item_sales_daily", "rest.turnover_day": "rest.table_turnover"}
    for rule in ALL_RULES:
        for target in rule.targets:
            for schema in mirrors:
                assert target.schema != schema.name, rule.name
                assert target.tag not in schema.tags, rule.name


def test_a_price_change_alone_does_not_drop_every_menu() -> None:
    old = {"id": 1, "name": "Burger", "category": "mains", "cost": "4.00",
           "kitchen_station": "grill", "available": True, "base_price": "12.00"}
    new = {**old, "base_price": "12.50"}
    # The tenant-wide menu tag is for what every line shows, not for the price...
    assert ITEM_DETAILS.fires(Operation.UPDATE, old, new) is False
    assert ITEM_DETAILS.fires(Operation.UPDATE, old, {**old, "name": "Smash Burger"}) is True
    # ...which reaches the menus through their entries.
    entry = {"menu_id": 3, "item_id": 1, "position": 2, "item_price": "12.00"}
    assert MENU_ON_ENTRY_CHANGE.fires(Operation.UPDATE, entry, {**entry, "item_price": "12.50"})


async def _cache_menus(live: Live, tenant: str) -> dict[int, set[int]]:
    """Cache every menu of ``tenant``; returns menu id -> item ids."""
    contents = {}
    for menu_id, _ in await loaders.active_menus(live.conn.fetch, tenant, 100):
        menu = await live.app.cache.get_or_load(
            MENU.key(tenant, menu_id=menu_id),
            lambda m=menu_id: loaders.menu(live.conn.fetch, tenant, m))  # type: ignore[misc]
        contents[menu_id] = {line.item_id for line in menu.lines}
    return contents


async def test_price_change_drops_exactly_the_menus_listing_the_item(rest_live: Live) -> None:
    live, cache = rest_live, rest_live.app.cache
    acme = await _cache_menus(live, "acme")
    globex = await _cache_menus(live, "globex")
    # An item on some menus but not all: both halves of "exactly" are tested.
    item = next(i for i in sorted(set().union(*acme.values()))
                if 0 < sum(i in items for items in acme.values()) < len(acme))
    listing = {m for m, items in acme.items() if item in items}
    await cache.set(MENU_ITEM.key("acme", item_id=item),
                    (await loaders.menu_items(live.conn.fetch, "acme", [item]))[0])

    await live.conn.execute("UPDATE rest.menu_items SET base_price = base_price + 1 "
                            "WHERE tenant_id = 'acme' AND id = $1", item)
    async with live.worker() as worker:
        results = await worker.drain()
    dropped = {k for r in results for k in r.keys}
    assert dropped == {f"{{acme}}:rest.menu:{m}" for m in listing} | {
        f"{{acme}}:rest.menu_item:{item}"}
    for menu_id in acme:
        cached = await cache.get(MENU.key("acme", menu_id=menu_id))
        assert (cached is None) is (menu_id in listing), menu_id
    # The other tenant's menus, with the same ids, are untouched.
    for menu_id in globex:
        assert await cache.get(MENU.key("globex", menu_id=menu_id)) is not None
    assert await cache.get(MENU_ITEM.key("acme", item_id=item)) is None
    # Read again: the new price, and the dynamic price follows it.
    menu_id = min(listing)
    menu = await cache.get_or_load(MENU.key("acme", menu_id=menu_id),
                                   lambda: loaders.menu(live.conn.fetch, "acme", menu_id))
    line = menu.line(item)
    stored = await live.conn.fetchval(
        "SELECT base_price FROM rest.menu_items WHERE tenant_id = 'acme' AND id = $1", item)
    assert line is not None
    assert line.base_price == stored


async def test_reservation_drops_its_days_grid_only(rest_live: Live) -> None:
    live, cache = rest_live, rest_live.app.cache
    today = loaders.utc_today()
    tomorrow = today + dt.timedelta(days=1)
    for day in (today, tomorrow):
        grid = await loaders.table_availability(live.conn.fetch, "acme", 1, day)
        await writers.store_availability(cache, "acme", grid)
    grid = await cache.hash(TABLE_AVAILABILITY.key("acme", location_id=1, day=tomorrow)).get()
    assert grid is not None
    free = [(s, t.table_id) for s in grid.slots for t in grid.tables
            if t.table_id not in grid.booked.get(s, [])]
    slot, table_id = free[0]
    await live.conn.execute(
        "INSERT INTO rest.reservations (tenant_id, id, location_id, table_id, day, slot, "
        "party_size, status) VALUES ('acme', 999999, 1, $1, $2, $3::time, 2, 'booked')",
        table_id, tomorrow, dt.time.fromisoformat(slot))
    async with live.worker() as worker:
        await worker.drain()
    assert await cache.hash(TABLE_AVAILABILITY.key("acme", location_id=1, day=tomorrow)).get() \
        is None
    assert await cache.hash(TABLE_AVAILABILITY.key("acme", location_id=1, day=today)).get() \
        is not None
    fresh = await loaders.table_availability(live.conn.fetch, "acme", 1, tomorrow)
    assert table_id in fresh.booked[slot]
    assert fresh.booked_table_slots == grid.booked_table_slots + 1


async def test_order_priority_change_drops_the_queues_of_its_lines(rest_live: Live) -> None:
    live, cache = rest_live, rest_live.app.cache
    [order_id] = await loaders.open_order_ids(live.conn.fetch, "acme", 1)
    [ticket] = await loaders.tickets(live.conn.fetch, "acme", [order_id])
    for station in Station:
        await cache.zset(KITCHEN_QUEUE.key("acme", location_id=1, station=station)).add(
            {0: 0.0}, replace=True)
    new = "rush" if ticket.priority.value != "rush" else "vip"
    await live.conn.execute("UPDATE rest.orders SET priority = $2 "
                            "WHERE tenant_id = 'acme' AND id = $1", order_id, new)
    async with live.worker() as worker:
        await worker.drain()
    stations = {line.station for line in ticket.lines}
    for station in Station:
        card = await cache.zset(KITCHEN_QUEUE.key("acme", location_id=1, station=station)).card()
        assert (card == 0) is (station in stations), station


async def test_demo_change_is_followed_through_the_worker(rest_live: Live) -> None:
    live = rest_live
    for tenant in TENANTS:
        name = await DEMO.read(live.app, live.conn, tenant, random.Random(1))
        assert name.startswith("rest.")
    change = await DEMO.change(live.app, live.conn, "acme", random.Random(5))
    assert "price" in change.description
    # Before the worker ran, the cached menu still shows the old price: the check can fail.
    stale = await change.verify()
    assert stale is not None
    assert "cache shows" in stale
    async with live.worker() as worker:
        await worker.drain()
    assert await change.verify() is None


async def test_demo_reads_go_through_the_cache_and_replay_as_hits(rest_live: Live) -> None:
    live = rest_live
    names = {s.name for s in ALL_SCHEMAS}
    counters = [live.app.cache.metrics.for_schema(n) for n in names]

    def lookups() -> tuple[int, int]:
        return sum(c.hits for c in counters), sum(c.misses for c in counters)

    reads = 60
    mix = [await DEMO.read(live.app, live.conn, "acme", random.Random(i)) for i in range(reads)]
    assert set(mix) == {MENU.name, MENU_CATEGORY.name, TABLE_AVAILABILITY.name, "rest.item_sales"}
    hits, misses = lookups()
    assert misses > 0
    # The same reads again: everything they read is cached now (sets and hashes too).
    assert [await DEMO.read(live.app, live.conn, "acme", random.Random(i))
            for i in range(reads)] == mix
    assert lookups() == (hits + reads, misses)


async def test_demo_populate_counts_rows(thorbis_pg_dsn: str) -> None:
    import asyncpg
    from rest_testing import create_schema

    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await create_schema(conn)
        rows = await DEMO.populate(conn, ["t1"], seed=1, scale=1)
        counted = 0
        for table in ("locations", "menu_items", "menus", "menu_entries", "dining_tables",
                      "reservations", "orders", "order_items"):
            counted += await conn.fetchval(f"SELECT count(*) FROM rest.{table}")  # noqa: S608
        assert rows == counted > 0
        prices = await conn.fetch(
            "SELECT e.item_price, i.base_price FROM rest.menu_entries e JOIN rest.menu_items i "
            "ON i.tenant_id = e.tenant_id AND i.id = e.item_id")
        assert all(r["item_price"] == r["base_price"] for r in prices)
        assert isinstance(prices[0]["item_price"], decimal.Decimal)
    finally:
        await conn.close()


#: A schema caching absence, its loader, and the INSERT of the row its key 900 names.
ABSENCES: list[tuple[KeySchema[Any], Callable[[Fetch, str, int], Awaitable[Any]], str]] = [
    (MENU, loaders.menu,
     "INSERT INTO rest.menus (tenant_id, id, location_id, name) "
     "VALUES ('acme', 900, 1, 'Brunch')"),
    (MENU_ITEM, loaders.menu_item,
     "INSERT INTO rest.menu_items (tenant_id, id, name, category, base_price) "
     "VALUES ('acme', 900, 'Shakshuka', 'mains', 14.50)"),
    (KITCHEN_ORDER, loaders.ticket,
     "INSERT INTO rest.orders (tenant_id, id, location_id, status, placed_at) "
     "VALUES ('acme', 900, 1, 'open', now())"),
]


@pytest.mark.parametrize(("schema", "loader", "insert"), ABSENCES,
                         ids=[s.name for s, _, _ in ABSENCES])
async def test_a_cached_absence_lasts_until_the_insert_rule(
    rest_live: Live, schema: KeySchema[Any],
    loader: Callable[[Fetch, str, int], Awaitable[Any]], insert: str,
) -> None:
    live, cache = rest_live, rest_live.app.cache
    key = schema.key("acme", **{schema.params[0].name: 900})
    fetch = CountingFetch(live.conn.fetch)

    async def read() -> Any:
        return await cache.get_or_load(key, lambda: loader(fetch, "acme", 900))

    with pytest.raises(MissingRow):
        await read()
    asked = fetch.calls
    assert asked > 0
    await live.conn.execute(insert)
    # Cached absence: the row exists now, but until its rule runs the cache says no.
    with pytest.raises(MissingRow):
        await read()
    assert fetch.calls == asked
    async with live.worker() as worker:
        dropped = {k for r in await worker.drain() for k in r.keys}
    assert key.body in dropped
    found = await read()
    assert fetch.calls > asked
    assert found == await loader(live.conn.fetch, "acme", 900)
