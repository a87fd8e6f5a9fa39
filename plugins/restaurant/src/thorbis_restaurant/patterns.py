"""The vertical's named reads (cache patterns), each ``async (cache, tenant, **kwargs)``.

Every pattern takes an optional keyword ``fetch`` (a
:data:`~thorbis_cache.plugins.declarations.Fetch`: ``async (sql, *args) -> rows``, e.g.
``pool.fetch``):

* with ``fetch``, it reads **through** the cache: what is not cached is loaded with the
  plugin's loaders (:mod:`thorbis_restaurant.loaders`) and cached whole under a fill
  lease, so a load that raced with an invalidation is answered but not cached; a key
  whose row does not exist raises :class:`~thorbis_cache.errors.MissingRow` (cached as
  absent for the schemas with a ``negative_ttl``);
* without it, it answers from the cache only -- what warmers, writers and earlier
  read-throughs stored -- and returns empty results (or None) for what is not cached.

Registered by :func:`thorbis_restaurant.plugin.register_cache_patterns` under the names
in :data:`PATTERNS`.
"""

from __future__ import annotations

import datetime as dt

import attrs
from thorbis_cache.cache.core import Cache
from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins.declarations import CachePattern, Fetch

from thorbis_restaurant import availability, loaders
from thorbis_restaurant.models import KitchenTicket, QueuedOrder, Station, TableAvailability
from thorbis_restaurant.schemas import (
    KITCHEN_ORDER,
    KITCHEN_QUEUE,
    LOCATION_MENUS,
    MENU,
    MENU_CATEGORY,
    TABLE_AVAILABILITY,
)

__all__ = [
    "PATTERNS",
    "AvailabilitySummary",
    "availability_summary",
    "category_items",
    "free_tables",
    "location_menus",
    "next_orders",
    "top_items",
]

_SUMMARY_FIELDS = ("total_table_slots", "booked_table_slots", "free_table_slots",
                   "busiest_slot")


@attrs.frozen(slots=True)
class AvailabilitySummary:
    """The summary fields of a (location, day) grid."""

    total_table_slots: int
    booked_table_slots: int
    free_table_slots: int
    busiest_slot: str | None


async def location_menus(cache: Cache, tenant: str, *, location_id: int,
                         fetch: Fetch | None = None) -> list[int]:
    """The active menu ids of a location, ascending.

    :param fetch: read through the cache (see the module doc); without it, ``[]`` when
        the list is not cached.
    :raises MissingRow: with ``fetch``, no such location.
    """
    zset = cache.zset(LOCATION_MENUS.key(tenant, location_id=location_id))
    if fetch is None:
        found = await zset.range_by_score()
    else:
        found = await zset.get_or_load(
            lambda: loaders.location_menus(fetch, tenant, location_id))
    return [menu_id for menu_id, _ in found]


async def category_items(cache: Cache, tenant: str, *, menu_id: int, category: str,
                         fetch: Fetch | None = None) -> list[int]:
    """Item ids of one category of a menu, in menu order.

    :param fetch: read through the cache; without it, ``[]`` when the set is not cached.
    :raises MissingRow: with ``fetch``, no such menu.
    """
    zset = cache.zset(MENU_CATEGORY.key(tenant, menu_id=menu_id, category=category))
    if fetch is None:
        found = await zset.range_by_score()
    else:
        found = await zset.get_or_load(
            lambda: loaders.menu_category(fetch, tenant, menu_id, category))
    return [item_id for item_id, _ in found]


async def top_items(cache: Cache, tenant: str, *, menu_id: int, n: int = 5,
                    fetch: Fetch | None = None) -> list[tuple[int, float]]:
    """The ``n`` most popular lines of a menu as ``(item id, popularity)``, most popular
    first (ties by menu position).

    :param fetch: read the menu through the cache; without it, ``[]`` when the menu is
        not cached.
    :raises ValueError: ``n`` is negative.
    :raises MissingRow: with ``fetch``, no such menu (cached as absent for a minute).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    key = MENU.key(tenant, menu_id=menu_id)
    if fetch is None:
        menu = await cache.get(key)
        if menu is None:
            return []
    else:
        menu = await cache.get_or_load(key, lambda: loaders.menu(fetch, tenant, menu_id))
    ranked = sorted(menu.lines, key=lambda line: (-line.popularity, line.position, line.item_id))
    return [(line.item_id, line.popularity) for line in ranked[:n]]


async def _ticket_through(cache: Cache, tenant: str, order_id: int,
                          fetch: Fetch) -> KitchenTicket | None:
    """The ticket of a queued order, read through; None for an order deleted since it
    was queued."""
    try:
        return await cache.get_or_load(KITCHEN_ORDER.key(tenant, order_id=order_id),
                                       lambda: loaders.ticket(fetch, tenant, order_id))
    except MissingRow:
        return None


async def _tickets_through(cache: Cache, tenant: str, order_ids: list[int],
                           fetch: Fetch) -> list[KitchenTicket | None]:
    """The tickets of queued orders: the cached ones in one MGET, each missing one read
    through."""
    found = await cache.get_many([KITCHEN_ORDER.key(tenant, order_id=o) for o in order_ids])
    # One at a time: ``fetch`` may be a single connection, which runs one query at a
    # time, and the tickets at a queue's head are usually cached with the queue.
    for i, order_id in enumerate(order_ids):
        if found[i] is None:
            found[i] = await _ticket_through(cache, tenant, order_id, fetch)
    return found


async def next_orders(cache: Cache, tenant: str, *, location_id: int, station: Station,
                      n: int = 10, fetch: Fetch | None = None) -> list[QueuedOrder]:
    """The next ``n`` orders a station should cook (lowest score first), with their
    tickets (one MGET for the cached ones).

    :param fetch: read the queue through the cache (the whole queue is loaded when it
        is not cached) and each ticket it lacks; without it, cache only: ``[]`` when the
        queue is not cached, a ticket None when it is not.
    :raises ValueError: ``n`` is negative.
    :raises MissingRow: with ``fetch``, no such location.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    queue = cache.zset(KITCHEN_QUEUE.key(tenant, location_id=location_id, station=station))
    if fetch is None:
        queued = await queue.range_by_score(count=n)
        tickets = await cache.get_many([KITCHEN_ORDER.key(tenant, order_id=o)
                                        for o, _ in queued])
    else:
        queued = await queue.range_by_score(
            count=n, loader=lambda: loaders.kitchen_queue(fetch, tenant, location_id, station))
        tickets = await _tickets_through(cache, tenant, [o for o, _ in queued], fetch)
    return [QueuedOrder(o, score, t) for (o, score), t in zip(queued, tickets)]


async def _grid(cache: Cache, tenant: str, location_id: int, day: dt.date,
                fetch: Fetch) -> TableAvailability:
    return await cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=location_id,
                                                   day=day)).get_or_load(
        lambda: loaders.table_availability(fetch, tenant, location_id, day))


async def free_tables(cache: Cache, tenant: str, *, location_id: int, day: dt.date, slot: str,
                      party_size: int = 1, fetch: Fetch | None = None) -> list[int] | None:
    """Tables free in a slot seating at least ``party_size``, smallest fit first.

    :param fetch: read the day's grid through the cache; without it, None when the grid
        is not cached.
    :raises MissingRow: with ``fetch``, no such location.
    """
    if fetch is None:
        grid = await cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=location_id,
                                                       day=day)).get()
        if grid is None:
            return None
    else:
        grid = await _grid(cache, tenant, location_id, day, fetch)
    return availability.free_tables(grid, slot, party_size)


async def availability_summary(cache: Cache, tenant: str, *, location_id: int, day: dt.date,
                               fetch: Fetch | None = None) -> AvailabilitySummary | None:
    """The summary of a (location, day) grid. From the cache it reads the four summary
    fields only.

    :param fetch: read the grid through the cache (a miss loads and caches the whole
        grid); without it, None when the grid is not cached.
    :raises MissingRow: with ``fetch``, no such location.
    """
    if fetch is not None:
        grid = await _grid(cache, tenant, location_id, day, fetch)
        return AvailabilitySummary(grid.total_table_slots, grid.booked_table_slots,
                                   grid.free_table_slots, grid.busiest_slot)
    got = await cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=location_id,
                                                  day=day)).get_fields(*_SUMMARY_FIELDS)
    if len(got) != len(_SUMMARY_FIELDS):
        return None
    return AvailabilitySummary(**got)


#: The registered patterns.
PATTERNS: tuple[CachePattern, ...] = (
    CachePattern("rest.location_menus", location_menus, schemas=(LOCATION_MENUS.name,),
                 description="the active menus of a location"),
    CachePattern("rest.category_items", category_items, schemas=(MENU_CATEGORY.name,),
                 description="item ids of a menu category in menu order"),
    CachePattern("rest.top_items", top_items, schemas=(MENU.name,),
                 description="a menu's most popular items (decayed recent sales)"),
    CachePattern("rest.next_orders", next_orders,
                 schemas=(KITCHEN_QUEUE.name, KITCHEN_ORDER.name),
                 description="the next orders of a kitchen station by priority"),
    CachePattern("rest.free_tables", free_tables, schemas=(TABLE_AVAILABILITY.name,),
                 description="tables free in a slot for a party size"),
    CachePattern("rest.availability_summary", availability_summary,
                 schemas=(TABLE_AVAILABILITY.name,),
                 description="booked/free table-slots and the busiest slot of a day"),
)
