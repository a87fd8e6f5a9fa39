"""The warmers run by :func:`thorbis_cache.warming.warm` on real Redis and PostgreSQL:
ids first, then batches whose entries equal what the loaders read from PostgreSQL;
and a row changed and invalidated (by the real outbox worker) between the leases and
the write is refused -- the next read-through returns the new row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from rest_testing import Live, LoadedDb
from thorbis_cache import Cache
from thorbis_cache.cache.keys import CacheKey, SchemaKind
from thorbis_cache.plugins.declarations import Fetch, WarmContext, Warmer
from thorbis_cache.testing.contract_fills import read_through
from thorbis_cache.warming import WarmBatch, WarmOutcome, warm

from thorbis_restaurant import loaders
from thorbis_restaurant.schemas import (
    ALL_SCHEMAS,
    KITCHEN_BOARD,
    KITCHEN_QUEUE,
    MENU_ITEM,
    TABLE_AVAILABILITY,
)
from thorbis_restaurant.warmers import (
    availability_warmer,
    default_warmers,
    kitchen_warmer,
    menus_warmer,
)

#: The single-key loader of each schema, called with the key's parameters.
LOADERS: dict[str, Callable[..., Awaitable[Any]]] = {
    "rest.menu": loaders.menu,
    "rest.menu_item": loaders.menu_item,
    "rest.location_menus": loaders.location_menus,
    "rest.menu_category": loaders.menu_category,
    "rest.table_availability": loaders.table_availability,
    "rest.kitchen_order": loaders.ticket,
    "rest.kitchen_queue": loaders.kitchen_queue,
    "rest.kitchen_board": loaders.kitchen_board,
}


KINDS = {s.name: s.kind for s in ALL_SCHEMAS}


def load_entry(fetch: Fetch, key: CacheKey[Any]) -> Awaitable[Any]:
    """The entry of ``key`` as its single-key loader reads it from PostgreSQL."""
    return LOADERS[key.schema.name](fetch, key.tenant, *key.values)


async def cached(cache: Cache, key: CacheKey[Any]) -> Any:
    """What the cache holds at ``key`` (its kind's shape); fails if it is not cached."""
    async def not_cached() -> Any:
        raise AssertionError(f"{key.body} is not cached")

    return await read_through(cache, key, not_cached)


async def test_warmed_entries_equal_postgresql(rest_cache: Cache, rest_db: LoadedDb) -> None:
    cache, db = rest_cache, rest_db
    seen: list[str] = []
    for warmer in default_warmers():
        kinds: list[str] = []
        async for batch in warmer.produce(WarmContext(cache, "acme", db.fetch)):
            kinds += [k.schema.name for k in batch.keys]
            assert await warm(cache, batch) == WarmOutcome(filled=len(batch.keys))
            for key in batch.keys:
                assert await cached(cache, key) == await load_entry(db.fetch, key), key.body
        seen += kinds
        # Entities before the sets that point at them.
        is_set = [KINDS[n] is SchemaKind.ZSET for n in kinds]
        assert is_set == sorted(is_set), warmer.name
    assert set(seen) == set(LOADERS)
    # A second run finds everything cached: nothing is read or written.
    for warmer in default_warmers():
        async for batch in warmer.produce(WarmContext(cache, "acme", db.fetch)):
            assert await warm(cache, batch) == WarmOutcome(cached=len(batch.keys))


def _racing(batch: WarmBatch, victim: CacheKey[Any],
            meanwhile: Callable[[], Awaitable[None]]) -> WarmBatch:
    """``batch`` whose load reads its rows under the leases, then runs ``meanwhile``
    before the entries are written."""
    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        entries = await batch.load(leased)
        assert victim in entries
        await meanwhile()
        return entries

    return WarmBatch(batch.keys, load, batch.description)


async def _warm_racing(live: Live, warmer: Warmer, victim: CacheKey[Any],
                       change: str, *args: object) -> WarmOutcome:
    """Run ``warmer`` for acme; the batch holding ``victim`` reads its rows under the
    leases, then ``change`` commits and the outbox worker applies its rules, then the
    batch writes. Returns that batch's outcome."""
    cache = live.app.cache

    async def commit_and_apply() -> None:
        await live.conn.execute(change, *args)
        async with live.worker() as worker:
            assert await worker.drain()

    raced = None
    async for batch in warmer.produce(WarmContext(cache, "acme", live.conn.fetch)):
        if victim in batch.keys:
            raced = await warm(cache, _racing(batch, victim, commit_and_apply))
        else:
            await warm(cache, batch)
    assert raced is not None, f"{warmer.name} warmed no {victim.body}"
    assert raced.rejected >= 1
    return raced


async def test_an_item_changed_while_warming_is_not_cached_stale(rest_live: Live) -> None:
    live, cache = rest_live, rest_live.app.cache
    [(menu_id, _)] = await loaders.active_menus(live.conn.fetch, "acme", 1)
    item_id = (await loaders.menu(live.conn.fetch, "acme", menu_id)).lines[0].item_id
    victim = MENU_ITEM.key("acme", item_id=item_id)
    await _warm_racing(live, menus_warmer(), victim,
                       "UPDATE rest.menu_items SET name = name || ' (new)' "
                       "WHERE tenant_id = 'acme' AND id = $1", item_id)
    item = await cache.get_or_load(victim,
                                   lambda: loaders.menu_item(live.conn.fetch, "acme", item_id))
    assert item.name.endswith(" (new)")


async def test_a_grid_booked_while_warming_is_not_cached_stale(rest_live: Live) -> None:
    live, cache = rest_live, rest_live.app.cache
    day = loaders.utc_today()
    victim = TABLE_AVAILABILITY.key("acme", location_id=1, day=day)
    before = await loaders.table_availability(live.conn.fetch, "acme", 1, day)
    slot, table_id = next((s, t.table_id) for s in before.slots for t in before.tables
                          if t.table_id not in before.booked.get(s, []))
    await _warm_racing(
        live, availability_warmer(lambda: day), victim,
        "INSERT INTO rest.reservations (tenant_id, id, location_id, table_id, day, slot, "
        "party_size, status) VALUES ('acme', 888888, 1, $1, $2, $3::time, 2, 'booked')",
        table_id, day, dt.time.fromisoformat(slot))
    grid = await cache.hash(victim).get_or_load(
        lambda: loaders.table_availability(live.conn.fetch, "acme", 1, day))
    assert table_id in grid.booked[slot]
    assert grid.booked_table_slots == before.booked_table_slots + 1


async def test_a_queue_bumped_while_warming_is_not_cached_stale(rest_live: Live) -> None:
    live, cache = rest_live, rest_live.app.cache
    board = await loaders.kitchen_board(live.conn.fetch, "acme", 1)
    order_id = min(board)
    [ticket] = await loaders.tickets(live.conn.fetch, "acme", [order_id])
    station = ticket.stations()[0]
    victim = KITCHEN_QUEUE.key("acme", location_id=1, station=station)
    outcome = await _warm_racing(
        live, kitchen_warmer(), victim,
        "UPDATE rest.order_items SET done = true WHERE tenant_id = 'acme' "
        "AND order_id = $1 AND station = $2", order_id, station.value)
    # The queue and the location's board: the rule on order lines names both.
    assert outcome.rejected >= 2
    queue = await cache.zset(victim).get_or_load(
        lambda: loaders.kitchen_queue(live.conn.fetch, "acme", 1, station))
    assert order_id not in dict(queue)
    assert dict(queue) == await loaders.kitchen_queue(live.conn.fetch, "acme", 1, station)
    board_now = await cache.zset(KITCHEN_BOARD.key("acme", location_id=1)).get_or_load(
        lambda: loaders.kitchen_board(live.conn.fetch, "acme", 1))
    assert dict(board_now) == await loaders.kitchen_board(live.conn.fetch, "acme", 1)
    assert (order_id in dict(board_now)) is (len(ticket.stations()) > 1)
