"""The cached structures on real Redis (standalone and cluster): the kitchen display
(enqueue, priority order, bump, complete, clearing one location through its index),
table bookings keeping grid and summary consistent under concurrent writers, and the
warmers' output read back through the patterns."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from rest_testing import LoadedDb
from thorbis_cache import Cache
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.plugins.declarations import WarmContext
from thorbis_cache.warming import WarmOutcome, warm

from thorbis_restaurant import availability, loaders, patterns, writers
from thorbis_restaurant.models import (
    DiningTable,
    KitchenTicket,
    OrderPriority,
    Station,
    TableAvailability,
    TicketLine,
)
from thorbis_restaurant.schemas import (
    KITCHEN_BOARD,
    KITCHEN_ORDER,
    KITCHEN_QUEUE,
    MENU,
    TABLE_AVAILABILITY,
)
from thorbis_restaurant.scoring import ticket_score
from thorbis_restaurant.warmers import default_warmers

NOW = dt.datetime(2024, 6, 30, 19, 0, tzinfo=dt.UTC)


def ticket(order_id: int, location_id: int, priority: OrderPriority, minutes_ago: int,
           *stations: Station) -> KitchenTicket:
    lines = [TicketLine(n, 100 + n, f"dish {n}", 1, s, False) for n, s in enumerate(stations, 1)]
    return KitchenTicket(order_id, location_id, "T1", priority,
                         NOW - dt.timedelta(minutes=minutes_ago), lines)


async def queue(cache: Cache, location_id: int, station: Station) -> list[int]:
    found = await patterns.next_orders(cache, "acme", location_id=location_id, station=station,
                                       n=50)
    return [q.order_id for q in found]


async def test_kitchen_queue_priority_bump_complete_and_clear(rest_cache: Cache) -> None:
    G, F, B = Station.GRILL, Station.FRY, Station.BAR
    orders = [
        ticket(1, 1, OrderPriority.NORMAL, 20, G, F),  # oldest
        ticket(2, 1, OrderPriority.NORMAL, 10, G),
        ticket(3, 1, OrderPriority.RUSH, 2, G, B),     # 2 min old, 15 min head start
        ticket(4, 1, OrderPriority.VIP, 12, F),
        ticket(5, 2, OrderPriority.NORMAL, 30, G),     # another location
    ]
    # The kitchen opens with nothing queued: the board and every queue are cached as
    # empty (as a read-through of a location without open orders leaves them), so the
    # writer's adds merge into them; a queue that is not cached is left to its loader.
    for location in (1, 2):
        await rest_cache.zset(KITCHEN_BOARD.key("acme", location_id=location)).add(
            {}, replace=True)
        for station in Station:
            await rest_cache.zset(KITCHEN_QUEUE.key(
                "acme", location_id=location, station=station)).add({}, replace=True)
    for t in orders:
        assert await writers.enqueue_order(rest_cache, "acme", t) == t.stations()
    # Rush (score now-17min) before the 20-min-old normal; VIP 12 min (-17) ties broken by id.
    assert await queue(rest_cache, 1, G) == [1, 3, 2]
    assert await queue(rest_cache, 1, F) == [1, 4]
    first = (await patterns.next_orders(rest_cache, "acme", location_id=1, station=G, n=1))[0]
    assert first.ticket == orders[0]
    assert first.score == ticket_score(orders[0])

    # Bumping one station keeps the order on the board until its last station is done.
    assert await writers.bump_station(rest_cache, "acme", 1, 1, G) is False
    assert await queue(rest_cache, 1, G) == [3, 2]
    assert await writers.bump_station(rest_cache, "acme", 1, 1, F) is True
    board = rest_cache.zset(KITCHEN_BOARD.key("acme", location_id=1))
    assert [o for o, _ in await board.range_by_score()] == [3, 4, 2]

    await writers.complete_order(rest_cache, "acme", 1, 3)
    assert await queue(rest_cache, 1, B) == []
    assert await rest_cache.get(KITCHEN_ORDER.key("acme", order_id=3)) is None

    # Clearing location 1 leaves location 2 (and its tickets) alone.
    assert await writers.clear_location(rest_cache, "acme", 1) > 0
    for s in Station:
        assert await queue(rest_cache, 1, s) == []
    assert await board.card() == 0
    assert await rest_cache.get(KITCHEN_ORDER.key("acme", order_id=2)) is None
    assert await queue(rest_cache, 2, G) == [5]
    assert await rest_cache.get(KITCHEN_ORDER.key("acme", order_id=5)) == orders[4]


async def test_bookings_keep_the_summary_consistent_under_concurrency(
    rest_cache: Cache,
) -> None:
    day = dt.date(2024, 7, 1)
    tables = [DiningTable(i, 2 + 2 * (i % 3)) for i in range(1, 7)]
    await writers.store_availability(rest_cache, "acme", availability.build(1, day, tables, []))
    pairs = [(s, t.table_id) for s in availability.DEFAULT_SLOTS[:4] for t in tables]
    # 24 bookings of one hash at once: version checks serialize them, none is lost.
    await asyncio.gather(*(writers.book_table(rest_cache, "acme", 1, day, s, t) for s, t in pairs))
    grid = await rest_cache.hash(TABLE_AVAILABILITY.key("acme", location_id=1, day=day)).get()
    assert grid == availability.build(1, day, tables, pairs)
    assert grid is not None
    assert grid.booked_table_slots == 24
    summary = await patterns.availability_summary(rest_cache, "acme", location_id=1, day=day)
    assert summary == patterns.AvailabilitySummary(
        grid.total_table_slots, 24, grid.free_table_slots, "11:30")
    freed = await writers.book_table(rest_cache, "acme", 1, day, "12:00", 2, booked=False)
    assert freed is not None
    assert freed.booked_table_slots == 23
    assert await patterns.free_tables(rest_cache, "acme", location_id=1, day=day,
                                      slot="12:00") == [2]
    # Not cached: nothing to update, nothing invented.
    assert await writers.book_table(rest_cache, "acme", 9, day, "12:00", 2) is None
    assert await patterns.free_tables(rest_cache, "acme", location_id=9, day=day,
                                      slot="12:00") is None


async def _warm(cache: Cache, db: LoadedDb, tenant: str) -> list[CacheKey[Any]]:
    keys: list[CacheKey[Any]] = []
    for warmer in default_warmers():
        async for batch in warmer.produce(WarmContext(cache, tenant, db.fetch)):
            assert all(k.tenant == tenant and k.schema.namespace == "rest" for k in batch.keys)
            outcome = await warm(cache, batch)
            # A cold cache and nobody writing: every key is filled from its row.
            assert outcome == WarmOutcome(filled=len(batch.keys)), batch.description
            keys += batch.keys
    return keys


async def test_warmers_fill_what_the_patterns_read(rest_standalone_cache: Cache,
                                                   rest_db: LoadedDb) -> None:
    cache = rest_standalone_cache
    keys = await _warm(cache, rest_db, "acme")
    assert {k.schema.name for k in keys} >= {
        "rest.menu", "rest.menu_item", "rest.menu_category", "rest.location_menus",
        "rest.table_availability", "rest.kitchen_order", "rest.kitchen_queue",
        "rest.kitchen_board"}
    assert await patterns.location_menus(cache, "acme", location_id=1) == [1, 2]
    menu = await cache.get(MENU.key("acme", menu_id=1))
    assert menu is not None
    assert menu == await loaders.menu(rest_db.fetch, "acme", 1)
    for category in menu.categories:
        assert await patterns.category_items(cache, "acme", menu_id=1, category=category) == [
            line.item_id for line in menu.lines if line.category == category]
    top = await patterns.top_items(cache, "acme", menu_id=1, n=3)
    assert [p for _, p in top] == sorted((line.popularity for line in menu.lines),
                                         reverse=True)[:3]
    assert top[0][1] > 0  # generated sales make real popularity
    # Every open order with a line to cook is queued at exactly its stations.
    open_ids = await loaders.open_order_ids(rest_db.fetch, "acme", 100)
    for t in await loaders.tickets(rest_db.fetch, "acme", open_ids):
        for s in Station:
            score = await cache.zset(KITCHEN_QUEUE.key("acme", location_id=t.location_id,
                                                       station=s)).score(t.order_id)
            assert (score is not None) is (s in t.stations())
    today = loaders.utc_today()
    grid = await cache.hash(TABLE_AVAILABILITY.key("acme", location_id=1, day=today)).get()
    assert isinstance(grid, TableAvailability)
    assert grid.booked_table_slots > 0
