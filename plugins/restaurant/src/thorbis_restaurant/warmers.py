"""The vertical's warmers: fill a tenant's cache from PostgreSQL ahead of demand.

A warmer yields ``(key, value)`` pairs of this plugin's schemas only; values follow the
kind of the key's schema (see :func:`thorbis_restaurant.writers.write_pair`): the record
for a value or hash, a mapping member -> score for a sorted set (the whole set). Entities
come before the sets that point at them. Every query is tenant-scoped and bounded.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from thorbis_cache.declarations import WarmContext, Warmer
from thorbis_cache.keys import CacheKey

from thorbis_restaurant import loaders
from thorbis_restaurant.models import Station
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
from thorbis_restaurant.writers import category_sets

__all__ = [
    "MAX_LOCATIONS",
    "MAX_MENUS",
    "MAX_OPEN_ORDERS",
    "availability_warmer",
    "default_warmers",
    "kitchen_warmer",
    "menus_warmer",
]

Pairs = AsyncIterator[tuple[CacheKey[Any], Any]]

MAX_MENUS = 200
MAX_LOCATIONS = 200
MAX_OPEN_ORDERS = 2000


def menus_warmer(limit: int = MAX_MENUS) -> Warmer:
    """Up to ``limit`` active menus with their catalogue items and category sets, and
    each location's menu list. One menu query costs three round trips."""

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        found = await loaders.active_menus(ctx.fetch, tenant, limit)
        by_location: dict[int, list[int]] = defaultdict(list)
        item_ids: set[int] = set()
        for menu_id, location_id in found:
            menu = await loaders.menu(ctx.fetch, tenant, menu_id)
            by_location[location_id].append(menu_id)
            item_ids.update(line.item_id for line in menu.lines)
            yield MENU.key(tenant, menu_id=menu_id), menu
            for category, members in category_sets(menu).items():
                yield MENU_CATEGORY.key(tenant, menu_id=menu_id, category=category), members
        for item in await loaders.menu_items(ctx.fetch, tenant, sorted(item_ids)):
            yield MENU_ITEM.key(tenant, item_id=item.id), item
        for location_id, menus in by_location.items():
            yield LOCATION_MENUS.key(tenant, location_id=location_id), {m: float(m) for m in menus}

    return Warmer(
        "rest.menus", produce,
        schemas=(MENU.name, MENU_CATEGORY.name, MENU_ITEM.name, LOCATION_MENUS.name),
        description=f"up to {limit} active menus, their items and category sets",
    )


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def availability_warmer(day: Callable[[], dt.date] = _utc_today) -> Warmer:
    """Every location's table grid of one day (default: today, UTC).

    :param day: which day to warm, asked at each run.
    """

    async def produce(ctx: WarmContext) -> Pairs:
        when = day()
        for location_id in await loaders.locations(ctx.fetch, ctx.tenant, MAX_LOCATIONS):
            grid = await loaders.table_availability(ctx.fetch, ctx.tenant, location_id, when)
            yield TABLE_AVAILABILITY.key(ctx.tenant, location_id=location_id, day=when), grid

    return Warmer("rest.availability", produce, schemas=(TABLE_AVAILABILITY.name,),
                  description="today's table grid of every location")


def kitchen_warmer(limit: int = MAX_OPEN_ORDERS) -> Warmer:
    """The open orders' tickets, every station queue and board that holds one."""

    async def produce(ctx: WarmContext) -> Pairs:
        tenant = ctx.tenant
        ids = await loaders.open_order_ids(ctx.fetch, tenant, limit)
        queues: dict[tuple[int, Station], dict[int, float]] = defaultdict(dict)
        boards: dict[int, dict[int, float]] = defaultdict(dict)
        for ticket in await loaders.tickets(ctx.fetch, tenant, ids):
            yield KITCHEN_ORDER.key(tenant, order_id=ticket.order_id), ticket
            stations = ticket.stations()
            if not stations:
                continue
            score = ticket_score(ticket)
            boards[ticket.location_id][ticket.order_id] = score
            for station in stations:
                queues[(ticket.location_id, station)][ticket.order_id] = score
        for location_id, members in boards.items():
            yield KITCHEN_BOARD.key(tenant, location_id=location_id), members
        for (location_id, station), members in queues.items():
            yield KITCHEN_QUEUE.key(tenant, location_id=location_id, station=station), members

    return Warmer("rest.kitchen", produce,
                  schemas=(KITCHEN_ORDER.name, KITCHEN_BOARD.name, KITCHEN_QUEUE.name),
                  description="open orders' tickets, station queues and boards")


def default_warmers() -> tuple[Warmer, ...]:
    """The warmers the plugin registers, with their default settings."""
    return (menus_warmer(), availability_warmer(), kitchen_warmer())
