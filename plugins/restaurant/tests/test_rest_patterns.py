"""Every pattern given ``fetch`` reads through the cache (standalone and cluster, real
PostgreSQL): the first call loads (runs queries), the second is answered from the cache
(runs none) and both equal what PostgreSQL holds, computed here with queries of our own;
the cache-only form then answers the same. A key whose row does not exist raises
MissingRow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from rest_testing import CountingFetch, LoadedDb
from thorbis_cache import Cache
from thorbis_cache.errors import MissingRow

from thorbis_restaurant import availability, loaders, patterns, predict
from thorbis_restaurant.models import OrderPriority, Station
from thorbis_restaurant.scoring import kitchen_score

Read = Callable[..., Awaitable[Any]]


async def _through(read: Read, db: LoadedDb) -> Any:
    """Call ``read(fetch=...)`` twice: the first loads, the second runs no query, both
    answer the same; then the cache-only form (no fetch) answers it too."""
    fetch = CountingFetch(db.fetch)
    first = await read(fetch=fetch)
    loaded = fetch.calls
    assert loaded > 0, "a cold read-through ran no query"
    assert await read(fetch=fetch) == first
    assert fetch.calls == loaded, "the second read-through went to the database"
    assert await read() == first
    return first


async def test_location_menus_and_category_items(rest_cache: Cache, rest_db: LoadedDb) -> None:
    cache, db = rest_cache, rest_db

    async def menus(**kw: Any) -> list[int]:
        return await patterns.location_menus(cache, "acme", location_id=2, **kw)

    stored = await db.conn.fetch("SELECT id FROM rest.menus WHERE tenant_id = 'acme' "
                                 "AND location_id = 2 AND active ORDER BY id")
    assert await _through(menus, db) == [r["id"] for r in stored] == [3, 4]

    rows = await db.conn.fetch(
        "SELECT e.item_id FROM rest.menu_entries e JOIN rest.menu_items i ON i.tenant_id = "
        "e.tenant_id AND i.id = e.item_id WHERE e.tenant_id = 'acme' AND e.menu_id = 3 AND "
        "i.category = 'mains' ORDER BY e.position")

    async def mains(**kw: Any) -> list[int]:
        return await patterns.category_items(cache, "acme", menu_id=3, category="mains", **kw)

    assert await _through(mains, db) == [r["item_id"] for r in rows]
    assert rows

    with pytest.raises(MissingRow):
        await patterns.location_menus(cache, "acme", location_id=404, fetch=db.fetch)
    with pytest.raises(MissingRow):
        await patterns.category_items(cache, "acme", menu_id=404, category="mains",
                                      fetch=db.fetch)


async def test_top_items(rest_cache: Cache, rest_db: LoadedDb) -> None:
    cache, db = rest_cache, rest_db
    today = loaders.utc_today()
    rows = await db.conn.fetch(
        "SELECT e.item_id, e.position, s.sales_day, s.quantity FROM rest.menu_entries e "
        "LEFT JOIN rest.item_sales_daily s ON s.tenant_id = e.tenant_id AND s.item_id = "
        "e.item_id AND s.location_id = 1 AND s.sales_day > $1::date - 35 "
        "WHERE e.tenant_id = 'acme' AND e.menu_id = 1", today)
    days: dict[tuple[int, int], list[tuple[dt.date, int]]] = {}
    for r in rows:
        days.setdefault((r["item_id"], r["position"]), [])
        if r["sales_day"] is not None:
            days[(r["item_id"], r["position"])].append((r["sales_day"], int(r["quantity"])))
    ranked = sorted(((item, position, predict.popularity(sold, today))
                     for (item, position), sold in days.items()),
                    key=lambda x: (-x[2], x[1], x[0]))

    async def top(**kw: Any) -> list[tuple[int, float]]:
        return await patterns.top_items(cache, "acme", menu_id=1, n=4, **kw)

    assert await _through(top, db) == [(item, p) for item, _, p in ranked[:4]]
    with pytest.raises(MissingRow):
        await patterns.top_items(cache, "acme", menu_id=404, fetch=db.fetch)


async def test_next_orders(rest_cache: Cache, rest_db: LoadedDb) -> None:
    cache, db = rest_cache, rest_db
    rows = await db.conn.fetch(
        "SELECT DISTINCT o.id, o.priority, o.placed_at, i.station FROM rest.orders o "
        "JOIN rest.order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id "
        "WHERE o.tenant_id = 'acme' AND o.location_id = 1 AND o.status = 'open' "
        "AND NOT i.done")
    station = Station(max({r["station"] for r in rows},
                          key=lambda s: sum(r["station"] == s for r in rows)))
    # Redis orders equal scores by the member's bytes (its decimal digits).
    queued = sorted(((kitchen_score(OrderPriority(r["priority"]), r["placed_at"]), r["id"])
                     for r in rows if r["station"] == station.value),
                    key=lambda pair: (pair[0], str(pair[1]).encode()))

    async def next_up(**kw: Any) -> list[Any]:
        return await patterns.next_orders(cache, "acme", location_id=1, station=station, n=5,
                                          **kw)

    found = await _through(next_up, db)
    assert [(q.score, q.order_id) for q in found] == queued[:5]
    stored = {t.order_id: t for t in await loaders.tickets(
        db.fetch, "acme", [q.order_id for q in found])}
    assert [q.ticket for q in found] == [stored[q.order_id] for q in found]
    with pytest.raises(MissingRow):
        await patterns.next_orders(cache, "acme", location_id=404, station=station,
                                   fetch=db.fetch)


async def test_free_tables_and_availability_summary(rest_cache: Cache,
                                                    rest_db: LoadedDb) -> None:
    cache, db = rest_cache, rest_db
    day = db.data.reference + dt.timedelta(days=2)
    tables = await db.conn.fetch("SELECT id, seats FROM rest.dining_tables WHERE tenant_id = "
                                 "'acme' AND location_id = 1 AND active")
    held = await db.conn.fetch(
        "SELECT DISTINCT to_char(slot, 'HH24:MI') AS slot, table_id FROM rest.reservations "
        "WHERE tenant_id = 'acme' AND location_id = 1 AND day = $1 "
        "AND status IN ('booked', 'seated', 'completed')", day)
    slot = held[0]["slot"]
    taken = {r["table_id"] for r in held if r["slot"] == slot}
    free = sorted((r["seats"], r["id"]) for r in tables
                  if r["id"] not in taken and r["seats"] >= 3)

    async def fitting(**kw: Any) -> list[int] | None:
        return await patterns.free_tables(cache, "acme", location_id=1, day=day, slot=slot,
                                          party_size=3, **kw)

    assert await _through(fitting, db) == [table_id for _, table_id in free]

    # A cached grid serves the summary: no query, and its counts are PostgreSQL's.
    fetch = CountingFetch(db.fetch)
    summary = await patterns.availability_summary(cache, "acme", location_id=1, day=day,
                                                  fetch=fetch)
    assert fetch.calls == 0
    assert summary is not None
    total = len(tables) * len(availability.DEFAULT_SLOTS)
    assert (summary.total_table_slots, summary.booked_table_slots) == (total, len(held))
    assert summary == await patterns.availability_summary(cache, "acme", location_id=1,
                                                          day=day)

    other_day = day + dt.timedelta(days=1)

    async def summarize(**kw: Any) -> patterns.AvailabilitySummary | None:
        return await patterns.availability_summary(cache, "acme", location_id=2,
                                                   day=other_day, **kw)

    grid = await loaders.table_availability(db.fetch, "acme", 2, other_day)
    assert await _through(summarize, db) == patterns.AvailabilitySummary(
        grid.total_table_slots, grid.booked_table_slots, grid.free_table_slots,
        grid.busiest_slot)
    with pytest.raises(MissingRow):
        await patterns.free_tables(cache, "acme", location_id=404, day=day, slot=slot,
                                   fetch=db.fetch)
