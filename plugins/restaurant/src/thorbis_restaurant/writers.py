"""Writes the vertical's cached structures: what the seed's ``cache*`` methods did, soundly.

* :func:`store_menu` -- the menu, its items, its category sets, and the location's menu
  list, each set replaced atomically (the seed's ``SADD`` + ``EXPIRE`` pairs left a
  set without expiry when the second command failed, and never removed an item);
* :func:`book_table` -- one booking in the (location, day) hash: grid and summary change
  in one atomic, version-checked update, retried on a concurrent write;
* :func:`enqueue_order`, :func:`bump_station`, :func:`complete_order`,
  :func:`clear_location` -- the kitchen display. The seed cleared a location with
  ``KEYS t:..:kitchen:<loc>:order:*`` (O(all keys of the server), blocking Redis); here
  the location's board (``rest.kitchen_board``) indexes its queued orders and the
  stations are a closed enum, so clearing touches only the location's own keys.

Every structure written here also has a loader (:mod:`thorbis_restaurant.loaders`) and
is read through the cache by the patterns given ``fetch``; the writers are for a host
that holds the truth at the moment it writes (the KDS that just bumped a station, the
booking it just committed). Each write revokes a read-through fill in flight, so a fill
that loaded older rows is refused. A writer that *adds* to a set the cache does not
hold creates the set with only what it adds, and a read-through takes a cached set as
the whole: a host that also reads queues through the database should let the rules
drop them (they fire on every order and line change) rather than enqueue into a queue
it has not read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.errors import VersionConflictError

from thorbis_restaurant import availability
from thorbis_restaurant.models import KitchenTicket, Menu, MenuItem, Station, TableAvailability
from thorbis_restaurant.schemas import (
    KITCHEN_BOARD,
    KITCHEN_ORDER,
    KITCHEN_QUEUE,
    LOCATION_MENUS,
    MENU,
    MENU_CATEGORY,
    MENU_ITEM,
    TABLE_AVAILABILITY,
)
from thorbis_restaurant.scoring import ticket_score

__all__ = [
    "BOOKING_RETRIES",
    "CLEAR_BATCH",
    "book_table",
    "bump_station",
    "category_sets",
    "clear_location",
    "complete_order",
    "enqueue_order",
    "store_availability",
    "store_location_menus",
    "store_menu",
]

#: Attempts of a booking against concurrent writers of the same hash; between attempts a
#: jittered, doubling pause (1 ms up to 32 ms) spreads the writers so that one wins each
#: round rather than all of them retrying in lockstep.
BOOKING_RETRIES = 32
#: Keys deleted per Redis call when clearing a location.
CLEAR_BATCH = 256


def category_sets(menu: Menu) -> dict[str, dict[int, float]]:
    """Category -> {item id: menu position} of a menu."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for line in menu.lines:
        out[line.category][line.item_id] = float(line.position)
    return dict(out)


async def store_menu(cache: Cache, tenant: str, menu: Menu,
                     items: Iterable[MenuItem] = ()) -> None:
    """Cache a menu, the given catalogue items, and the menu's category sets (each
    replaced whole)."""
    await asyncio.gather(
        cache.set(MENU.key(tenant, menu_id=menu.menu_id), menu),
        *(cache.set(MENU_ITEM.key(tenant, item_id=i.id), i) for i in items),
        *(
            cache.zset(MENU_CATEGORY.key(tenant, menu_id=menu.menu_id, category=c)).add(
                members, replace=True)
            for c, members in category_sets(menu).items()
        ),
    )


async def store_location_menus(cache: Cache, tenant: str, location_id: int,
                               menu_ids: Iterable[int]) -> None:
    """Replace a location's list of active menus."""
    await cache.zset(LOCATION_MENUS.key(tenant, location_id=location_id)).add(
        {m: float(m) for m in menu_ids}, replace=True)


# --------------------------------------------------------------------------- tables


async def store_availability(cache: Cache, tenant: str, grid: TableAvailability) -> int:
    """Cache a whole (location, day) grid; returns its version."""
    key = TABLE_AVAILABILITY.key(tenant, location_id=grid.location_id, day=grid.day)
    return await cache.hash(key).replace(grid)


async def book_table(cache: Cache, tenant: str, location_id: int, day: dt.date, slot: str,
                     table_id: int, *, booked: bool = True) -> TableAvailability | None:
    """Book (or, with ``booked=False``, free) a table in a slot of the cached grid, and
    its summary with it, in one version-checked update.

    Retried up to :data:`BOOKING_RETRIES` times, with a jittered pause, when another
    writer changed the hash in between. The database stays the source of truth: this
    keeps a cached grid in step with a reservation the host has just committed.

    :returns: the grid as written, or None when the grid is not cached (nothing to
        update; the next read loads it).
    :raises ValueError: unknown slot or table, or the table is already taken.
    :raises VersionConflictError: still conflicting after the retries.
    """
    entity = cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=location_id, day=day))
    for attempt in range(BOOKING_RETRIES):
        current = await entity.get_versioned()
        if current is None:
            return None
        changes = availability.with_booking(current.value, slot, table_id, booked=booked)
        try:
            await entity.update(changes, expected_version=current.version)
        except VersionConflictError:
            if attempt == BOOKING_RETRIES - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.001 * 2 ** min(attempt, 5)))
            continue
        fields: dict[str, Any] = {
            "location_id": current.value.location_id, "day": current.value.day,
            "slots": current.value.slots, "tables": current.value.tables, **changes,
        }
        return TableAvailability(**fields)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- kitchen


async def enqueue_order(cache: Cache, tenant: str, ticket: KitchenTicket) -> list[Station]:
    """Put an order on the kitchen display: its ticket, the queue of every station with
    a line to cook (scored by :func:`~thorbis_restaurant.scoring.ticket_score`), and the
    location's board. Ticket first, so a cook who sees the id finds the ticket.

    :returns: the stations it was queued at.
    """
    score = ticket_score(ticket)
    stations = ticket.stations()
    await cache.set(KITCHEN_ORDER.key(tenant, order_id=ticket.order_id), ticket)
    # Board before queues: clear_location finds every queued order through the board.
    await cache.zset(KITCHEN_BOARD.key(tenant, location_id=ticket.location_id)).add(
        {ticket.order_id: score})
    await asyncio.gather(*(
        cache.zset(KITCHEN_QUEUE.key(tenant, location_id=ticket.location_id, station=s)).add(
            {ticket.order_id: score})
        for s in stations
    ))
    return stations


async def bump_station(cache: Cache, tenant: str, location_id: int, order_id: int,
                       station: Station) -> bool:
    """A station is done with an order (the KDS "bump"): remove it from that station's
    queue; when no station holds it any more, take it off the board.

    Remove-then-check makes concurrent bumps of the last two stations safe: whichever
    checks last sees both removed.

    :returns: True when the order left the board (every station is done).
    """
    await cache.zset(KITCHEN_QUEUE.key(tenant, location_id=location_id, station=station)).remove(
        order_id)
    scores = await asyncio.gather(*(
        cache.zset(KITCHEN_QUEUE.key(tenant, location_id=location_id, station=s)).score(order_id)
        for s in Station
    ))
    if any(score is not None for score in scores):
        return False
    await cache.zset(KITCHEN_BOARD.key(tenant, location_id=location_id)).remove(order_id)
    return True


async def complete_order(cache: Cache, tenant: str, location_id: int, order_id: int) -> None:
    """An order is served or cancelled: off every station, off the board, ticket gone."""
    await asyncio.gather(*(
        cache.zset(KITCHEN_QUEUE.key(tenant, location_id=location_id, station=s)).remove(
            order_id)
        for s in Station
    ))
    await cache.zset(KITCHEN_BOARD.key(tenant, location_id=location_id)).remove(order_id)
    await cache.delete(KITCHEN_ORDER.key(tenant, order_id=order_id))


async def clear_location(cache: Cache, tenant: str, location_id: int) -> int:
    """Drop a location's whole kitchen display (the seed's ``cacheKitchenOrders``
    prelude): its tickets, found through the board, every station queue (a closed set),
    and the board itself. Bounded by the location's own queued orders; no ``KEYS``.

    :returns: how many keys existed.
    """
    board = cache.zset(KITCHEN_BOARD.key(tenant, location_id=location_id))
    orders = [order_id for order_id, _ in await board.range_by_score()]
    keys: list[CacheKey[Any]] = [KITCHEN_ORDER.key(tenant, order_id=o) for o in orders]
    keys += [KITCHEN_QUEUE.key(tenant, location_id=location_id, station=s) for s in Station]
    deleted = 0
    for start in range(0, len(keys), CLEAR_BATCH):
        deleted += await cache.delete(*keys[start:start + CLEAR_BATCH])
    # The board last: until here a concurrent clear still finds the tickets.
    deleted += await cache.delete(KITCHEN_BOARD.key(tenant, location_id=location_id))
    return deleted
