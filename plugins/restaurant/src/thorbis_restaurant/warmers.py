"""The vertical's warmers: fill a tenant's cache from PostgreSQL ahead of demand.

Each warmer yields :class:`~thorbis_cache.warming.WarmBatch` es, which the core runs with
:func:`~thorbis_cache.warming.warm`. A warmer first reads only the ids of what it means
to warm (a cheap query); each batch's ``load`` then reads the entries of the keys it is
handed -- those whose fill lease was taken -- through the batched loaders of
:mod:`thorbis_restaurant.loaders`, *after* the leases. A change committed between the
lease and the write revokes the lease, so a warmer never caches a row older than a
concurrent change. Entries take their key's shape: the record for a value or a hash,
the whole set member -> score for a sorted set; a key whose row has gone is left out of
the mapping (an absent row).

Entity batches come before the sets that point at them. Each warmer costs a fixed
number of queries per tenant, whatever its size, and every query is tenant-scoped and
bounded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.plugins.declarations import Fetch, WarmContext, Warmer
from thorbis_cache.warming import WarmBatch, batch_of

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

__all__ = [
    "MAX_LOCATIONS",
    "MAX_MENUS",
    "MAX_OPEN_ORDERS",
    "availability_batch",
    "availability_warmer",
    "category_batch",
    "default_warmers",
    "item_batch",
    "kitchen_batch",
    "kitchen_warmer",
    "location_menus_batch",
    "menu_batch",
    "menus_warmer",
    "ticket_batch",
]

Batches = AsyncIterator[WarmBatch]
Entries = Mapping[CacheKey[Any], Any]

MAX_MENUS = 200
MAX_LOCATIONS = 200
MAX_OPEN_ORDERS = 2000


# --------------------------------------------------------------------------- batches


def item_batch(fetch: Fetch, tenant: str, item_ids: Iterable[int]) -> WarmBatch:
    """Catalogue items (``rest.menu_item``) by id."""
    return batch_of(MENU_ITEM, tenant, sorted(set(item_ids)),
                    lambda leased: loaders.menu_items(fetch, tenant, leased),
                    key_of=lambda item: item.id, description="catalogue items")


def menu_batch(fetch: Fetch, tenant: str, menu_ids: Iterable[int]) -> WarmBatch:
    """Menus (``rest.menu``) by id, priced for today: three queries for the batch."""
    return batch_of(MENU, tenant, sorted(set(menu_ids)),
                    lambda leased: loaders.menus(fetch, tenant, leased),
                    description="menus")


def category_batch(fetch: Fetch, tenant: str,
                   pairs: Iterable[tuple[int, str]]) -> WarmBatch:
    """Category sets (``rest.menu_category``) of ``(menu id, category)`` pairs."""
    keys = {MENU_CATEGORY.key(tenant, menu_id=m, category=c): (m, c)
            for m, c in sorted(set(pairs))}

    async def load(leased: Sequence[CacheKey[Any]]) -> Entries:
        wanted = [keys[k] for k in leased]
        sets = await loaders.menu_category_sets(
            fetch, tenant, {m for m, _ in wanted}, {c for _, c in wanted})
        # A category emptied meanwhile is an empty set, as its read-through caches it;
        # a menu gone meanwhile has no entry (absent).
        return {k: sets[keys[k]] for k in leased if keys[k] in sets}

    return WarmBatch(tuple(keys), load, description=f"{len(keys)} menu category sets")


def location_menus_batch(fetch: Fetch, tenant: str, location_ids: Iterable[int]) -> WarmBatch:
    """Locations' lists of active menus (``rest.location_menus``)."""
    return batch_of(LOCATION_MENUS, tenant, sorted(set(location_ids)),
                    lambda leased: loaders.location_menu_sets(fetch, tenant, leased),
                    description="menu lists of locations")


def availability_batch(fetch: Fetch, tenant: str, location_ids: Iterable[int],
                       day: dt.date) -> WarmBatch:
    """Table grids (``rest.table_availability``) of locations on one day: two queries."""
    keys = {TABLE_AVAILABILITY.key(tenant, location_id=loc, day=day): (loc, day)
            for loc in sorted(set(location_ids))}

    async def load(leased: Sequence[CacheKey[Any]]) -> Entries:
        grids = await loaders.table_availabilities(fetch, tenant, [keys[k] for k in leased])
        return {k: grids[keys[k]] for k in leased if keys[k] in grids}

    return WarmBatch(tuple(keys), load, description=f"{len(keys)} table grids of {day}")


def ticket_batch(fetch: Fetch, tenant: str, order_ids: Iterable[int]) -> WarmBatch:
    """Kitchen tickets (``rest.kitchen_order``) of orders."""
    return batch_of(KITCHEN_ORDER, tenant, sorted(set(order_ids)),
                    lambda leased: loaders.tickets(fetch, tenant, leased),
                    key_of=lambda t: t.order_id, description="kitchen tickets")


def kitchen_batch(fetch: Fetch, tenant: str, location_ids: Iterable[int]) -> WarmBatch:
    """The kitchen display of locations: each location's board (``rest.kitchen_board``)
    and the queue of every station (``rest.kitchen_queue``, empty ones too: a cook's
    read of an idle station then needs no query). One query for the batch."""
    locations = sorted(set(location_ids))
    keys: dict[CacheKey[Any], tuple[int, Station | None]] = {}
    for loc in locations:
        keys[KITCHEN_BOARD.key(tenant, location_id=loc)] = (loc, None)
        for station in Station:
            keys[KITCHEN_QUEUE.key(tenant, location_id=loc, station=station)] = (loc, station)

    async def load(leased: Sequence[CacheKey[Any]]) -> Entries:
        wanted = [keys[k] for k in leased]
        # A board is the union of its location's queues: every station is read for it.
        stations = set(Station) if any(s is None for _, s in wanted) else {
            s for _, s in wanted if s is not None}
        queues = await loaders.kitchen_queues(fetch, tenant, {loc for loc, _ in wanted},
                                              stations)
        boards = loaders.boards_of(queues)
        out: dict[CacheKey[Any], Any] = {}
        for key in leased:
            loc, station = keys[key]
            if station is None:
                if loc in boards:
                    out[key] = boards[loc]
            elif (loc, station) in queues:
                out[key] = queues[(loc, station)]
        return out

    return WarmBatch(tuple(keys), load,
                     description=f"kitchen boards and station queues of {len(locations)} "
                     "locations")


# --------------------------------------------------------------------------- warmers


def menus_warmer(limit: int = MAX_MENUS) -> Warmer:
    """Up to ``limit`` active menus: their catalogue items, the menus, their category
    sets, and each location's menu list. Two id queries, then one batch per schema."""

    async def produce(ctx: WarmContext) -> Batches:
        tenant = ctx.tenant
        found = await loaders.active_menus(ctx.fetch, tenant, limit)
        if not found:
            return
        menu_ids = [m for m, _ in found]
        entries = await loaders.menu_entry_keys(ctx.fetch, tenant, menu_ids)
        if entries:
            yield item_batch(ctx.fetch, tenant, {item for _, item, _ in entries})
        yield menu_batch(ctx.fetch, tenant, menu_ids)
        if entries:
            yield category_batch(ctx.fetch, tenant, {(m, c) for m, _, c in entries})
        yield location_menus_batch(ctx.fetch, tenant, {loc for _, loc in found})

    return Warmer(
        "rest.menus", produce,
        schemas=(MENU_ITEM.name, MENU.name, MENU_CATEGORY.name, LOCATION_MENUS.name),
        description=f"up to {limit} active menus, their items and category sets",
    )


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def availability_warmer(day: Callable[[], dt.date] = _utc_today) -> Warmer:
    """Every location's table grid of one day (default: today, UTC), at most
    :data:`MAX_LOCATIONS` locations. One id query, then two for the batch.

    :param day: which day to warm, asked at each run.
    """

    async def produce(ctx: WarmContext) -> Batches:
        ids = await loaders.locations(ctx.fetch, ctx.tenant, MAX_LOCATIONS)
        if ids:
            yield availability_batch(ctx.fetch, ctx.tenant, ids, day())

    return Warmer("rest.availability", produce, schemas=(TABLE_AVAILABILITY.name,),
                  description="today's table grid of every location")


def kitchen_warmer(limit: int = MAX_OPEN_ORDERS) -> Warmer:
    """The tickets of at most ``limit`` open orders (oldest first), then the board and
    every station queue of each location with an open order (whole sets). Two id
    queries, then one query per batch."""

    async def produce(ctx: WarmContext) -> Batches:
        tenant = ctx.tenant
        ids = await loaders.open_order_ids(ctx.fetch, tenant, limit)
        if ids:
            yield ticket_batch(ctx.fetch, tenant, ids)
        where = await loaders.open_order_locations(ctx.fetch, tenant, MAX_LOCATIONS)
        if where:
            yield kitchen_batch(ctx.fetch, tenant, where)

    return Warmer("rest.kitchen", produce,
                  schemas=(KITCHEN_ORDER.name, KITCHEN_BOARD.name, KITCHEN_QUEUE.name),
                  description="open orders' tickets, station queues and boards")


def default_warmers() -> tuple[Warmer, ...]:
    """The warmers the plugin registers, with their default settings."""
    return (menus_warmer(), availability_warmer(), kitchen_warmer())
