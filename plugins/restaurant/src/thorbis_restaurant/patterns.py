"""The vertical's named reads (cache patterns), each ``async (cache, tenant, **kwargs)``.

Patterns read the cache only: they answer from what warmers and writers stored, and
return empty results (or None) for what is not cached. Registered by
:func:`thorbis_restaurant.plugin.register_cache_patterns` under the names in
:data:`PATTERNS`.
"""

from __future__ import annotations

import datetime as dt

import attrs
from thorbis_cache.cache import Cache
from thorbis_cache.declarations import CachePattern

from thorbis_restaurant import availability
from thorbis_restaurant.models import QueuedOrder, Station
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


@attrs.frozen(slots=True)
class AvailabilitySummary:
    """The summary fields of a (location, day) grid."""

    total_table_slots: int
    booked_table_slots: int
    free_table_slots: int
    busiest_slot: str | None


async def location_menus(cache: Cache, tenant: str, *, location_id: int) -> list[int]:
    """The active menu ids of a location, ascending."""
    key = LOCATION_MENUS.key(tenant, location_id=location_id)
    return [menu_id for menu_id, _ in await cache.zset(key).range_by_score()]


async def category_items(cache: Cache, tenant: str, *, menu_id: int, category: str) -> list[int]:
    """Item ids of one category of a menu, in menu order."""
    key = MENU_CATEGORY.key(tenant, menu_id=menu_id, category=category)
    return [item_id for item_id, _ in await cache.zset(key).range_by_score()]


async def top_items(cache: Cache, tenant: str, *, menu_id: int,
                    n: int = 5) -> list[tuple[int, float]]:
    """The ``n`` most popular lines of a cached menu as ``(item id, popularity)``, most
    popular first (ties by menu position); empty when the menu is not cached.

    :raises ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    menu = await cache.get(MENU.key(tenant, menu_id=menu_id))
    if menu is None:
        return []
    ranked = sorted(menu.lines, key=lambda line: (-line.popularity, line.position, line.item_id))
    return [(line.item_id, line.popularity) for line in ranked[:n]]


async def next_orders(cache: Cache, tenant: str, *, location_id: int, station: Station,
                      n: int = 10) -> list[QueuedOrder]:
    """The next ``n`` orders a station should cook (lowest score first), with their
    cached tickets (one MGET).

    :raises ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    queue = cache.zset(KITCHEN_QUEUE.key(tenant, location_id=location_id, station=station))
    queued = await queue.range_by_score(count=n)
    tickets = await cache.get_many([KITCHEN_ORDER.key(tenant, order_id=o) for o, _ in queued])
    return [QueuedOrder(o, score, t) for (o, score), t in zip(queued, tickets)]


async def free_tables(cache: Cache, tenant: str, *, location_id: int, day: dt.date, slot: str,
                      party_size: int = 1) -> list[int] | None:
    """Tables free in a slot seating at least ``party_size``, smallest fit first; None
    when the day's grid is not cached."""
    grid = await cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=location_id,
                                                   day=day)).get()
    if grid is None:
        return None
    return availability.free_tables(grid, slot, party_size)


async def availability_summary(cache: Cache, tenant: str, *, location_id: int,
                               day: dt.date) -> AvailabilitySummary | None:
    """The summary of a (location, day) grid, reading the four summary fields only."""
    fields = ("total_table_slots", "booked_table_slots", "free_table_slots", "busiest_slot")
    got = await cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=location_id,
                                                  day=day)).get_fields(*fields)
    if len(got) != len(fields):
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
