"""Loads the vertical's cache entries from PostgreSQL: one loader per key schema, shaped
for read-through, and the batched form each is built on, for the warmers.

Every function takes ``fetch``: ``async (sql, *args) -> list of row mappings`` (the
shape of :attr:`thorbis_cache.plugins.declarations.WarmContext.fetch`; ``pool.fetch`` or
``conn.fetch`` of asyncpg), so this module runs SQL without importing a driver.

A single-key loader returns exactly its key's entry -- the record of a value or a hash,
the *whole* set ``{member: score}`` of a sorted set -- and raises
:class:`~thorbis_cache.errors.MissingRow` when the row its key names does not exist::

    menu = await cache.get_or_load(
        MENU.key(tenant, menu_id=3), lambda: loaders.menu(pool.fetch, tenant, 3))
    grid = await cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=1, day=day)) \\
        .get_or_load(lambda: loaders.table_availability(pool.fetch, tenant, 1, day))
    next_up = await cache.zset(KITCHEN_QUEUE.key(tenant, location_id=1, station=GRILL)) \\
        .range_by_score(count=5, loader=lambda: loaders.kitchen_queue(pool.fetch, tenant,
                                                                      1, GRILL))

===========================  ==========================  ============================
schema                       loader                      batched (warmers)
===========================  ==========================  ============================
``rest.menu``                :func:`menu`                :func:`menus`
``rest.menu_item``           :func:`menu_item`           :func:`menu_items`
``rest.location_menus``      :func:`location_menus`      :func:`location_menu_sets`
``rest.menu_category``       :func:`menu_category`       :func:`menu_category_sets`
``rest.table_availability``  :func:`table_availability`  :func:`table_availabilities`
``rest.kitchen_order``       :func:`ticket`              :func:`tickets`
``rest.kitchen_queue``       :func:`kitchen_queue`       :func:`kitchen_queues`
``rest.kitchen_board``       :func:`kitchen_board`       :func:`kitchen_boards`
``rest.item_sales``          :func:`item_sales`          (view; not warmed)
``rest.turnover_day``        :func:`turnover_day`        (view; not warmed)
===========================  ==========================  ============================

Each single-key loader is its batched loader asked for one key, so a warmed entry and a
read-through entry of the same rows are equal. A set keyed by a parent row (a location,
a menu) is empty when the parent has no members and :class:`MissingRow` when the parent
does not exist. ``rest.item_sales`` and ``rest.turnover_day`` read the materialized views
only (their schemas mirror them): a key without a view row is zeros, not absent.

Queries live in ``sql/q_*.sql``; every one is scoped to one tenant and to the ids it is
given (a queue or board reads the open orders of its locations: what a kitchen holds).
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins import declarations

from thorbis_restaurant import availability, predict
from thorbis_restaurant.models import (
    DiningTable,
    ItemSales,
    KitchenTicket,
    Menu,
    MenuItem,
    MenuLine,
    OrderPriority,
    Station,
    TableAvailability,
    TicketLine,
    TurnoverDay,
)
from thorbis_restaurant.scoring import kitchen_score
from thorbis_restaurant.sqlfiles import query

__all__ = [
    "Fetch",
    "MissingRow",
    "active_menus",
    "boards_of",
    "item_sales",
    "kitchen_board",
    "kitchen_boards",
    "kitchen_queue",
    "kitchen_queues",
    "location_menu_sets",
    "location_menus",
    "locations",
    "menu",
    "menu_category",
    "menu_category_sets",
    "menu_entry_keys",
    "menu_item",
    "menu_items",
    "menus",
    "open_order_ids",
    "open_order_locations",
    "table_availabilities",
    "table_availability",
    "ticket",
    "tickets",
    "turnover_day",
    "utc_today",
]

#: ``async (sql, *args) -> rows``: how loaders reach the database.
Fetch = declarations.Fetch
#: A sorted set's whole content: member -> score.
Scores = dict[int, float]

_ZERO = decimal.Decimal("0.00")
_SalesDays = list[tuple[dt.date, int, decimal.Decimal]]


def utc_today() -> dt.date:
    """Today in UTC (the day the sales view buckets by)."""
    return dt.datetime.now(dt.UTC).date()


# --------------------------------------------------------------------------- ids (warmers)


async def active_menus(fetch: Fetch, tenant: str, limit: int) -> list[tuple[int, int]]:
    """``(menu id, location id)`` of at most ``limit`` active menus, by id."""
    return [(r["id"], r["location_id"])
            for r in await fetch(query("q_active_menus"), tenant, limit)]


async def menu_entry_keys(fetch: Fetch, tenant: str,
                          menu_ids: Iterable[int]) -> list[tuple[int, int, str]]:
    """``(menu id, item id, category)`` of every item the given menus list."""
    return [(r["menu_id"], r["item_id"], r["category"])
            for r in await fetch(query("q_menu_entry_keys"), tenant, sorted(set(menu_ids)))]


async def locations(fetch: Fetch, tenant: str, limit: int = 1000) -> list[int]:
    """The location ids of a tenant (at most ``limit``), ascending."""
    return [r["id"] for r in await fetch(query("q_locations"), tenant, limit)]


async def open_order_ids(fetch: Fetch, tenant: str, limit: int) -> list[int]:
    """Ids of at most ``limit`` open orders, oldest first."""
    return [r["id"] for r in await fetch(query("q_open_orders"), tenant, limit)]


async def open_order_locations(fetch: Fetch, tenant: str, limit: int) -> list[int]:
    """Ids of at most ``limit`` locations with an open order, ascending."""
    return [r["location_id"]
            for r in await fetch(query("q_open_order_locations"), tenant, limit)]


# --------------------------------------------------------------------------- menus


async def _sales_days(
    fetch: Fetch, tenant: str, pairs: Iterable[tuple[int, int]], today: dt.date
) -> dict[tuple[int, int], _SalesDays]:
    """``(location, item)`` -> its daily ``(day, quantity, revenue)`` rows of the 35 days
    up to ``today``, from the view (pairs without sales are left out)."""
    wanted = sorted(set(pairs))
    out: dict[tuple[int, int], _SalesDays] = defaultdict(list)
    if wanted:
        found = await fetch(query("q_item_sales_days"), tenant, [p[0] for p in wanted],
                            [p[1] for p in wanted], today)
        for r in found:
            out[(r["location_id"], r["item_id"])].append(
                (r["sales_day"], int(r["quantity"]), r["revenue"]))
    return out


def _menu_line(r: Mapping[str, Any], sales: _SalesDays, day: dt.date) -> MenuLine:
    days = [(d, q) for d, q, _ in sales]
    ratio = predict.demand_ratio(days, day)
    base: decimal.Decimal = r["base_price"]
    return MenuLine(
        item_id=r["item_id"], name=r["name"], category=r["category"], position=r["position"],
        base_price=base, price=predict.dynamic_price(base, ratio),
        popularity=predict.popularity(days, day), demand_ratio=ratio,
        margin=base - r["cost"], station=Station(r["kitchen_station"]),
        available=r["available"],
    )


async def menus(fetch: Fetch, tenant: str, menu_ids: Iterable[int],
                today: dt.date | None = None) -> dict[int, Menu]:
    """Menus by id with their lines; popularity and dynamic prices for ``today``
    (default: UTC today) from the ``rest.item_sales_daily`` view (as of its last
    refresh). Absent ids are left out. Three queries, whatever the number of menus."""
    ids = sorted(set(menu_ids))
    if not ids:
        return {}
    day = today or utc_today()
    heads = await fetch(query("q_menus"), tenant, ids)
    if not heads:
        return {}
    location_of = {h["id"]: int(h["location_id"]) for h in heads}
    lines_of: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in await fetch(query("q_menu_lines"), tenant, sorted(location_of)):
        lines_of[r["menu_id"]].append(r)
    sales = await _sales_days(
        fetch, tenant,
        ((location_of[m], r["item_id"]) for m, rows in lines_of.items() for r in rows), day)
    out = {}
    for h in heads:
        menu_id, location_id = h["id"], location_of[h["id"]]
        rows = lines_of.get(menu_id, [])
        categories = list(dict.fromkeys(r["category"] for r in rows))
        lines = [_menu_line(r, sales.get((location_id, r["item_id"]), []), day) for r in rows]
        out[menu_id] = Menu(menu_id, location_id, h["name"], categories, lines, day)
    return out


async def menu(fetch: Fetch, tenant: str, menu_id: int, today: dt.date | None = None) -> Menu:
    """A menu with its lines (:func:`menus` of one id).

    :raises MissingRow: no such menu.
    """
    found = await menus(fetch, tenant, [menu_id], today)
    if menu_id not in found:
        raise MissingRow("rest.menus", tenant, menu_id)
    return found[menu_id]


async def menu_items(fetch: Fetch, tenant: str, ids: Iterable[int]) -> list[MenuItem]:
    """Catalogue items with these ids (absent ids skipped), by id."""
    return [
        MenuItem(r["id"], r["name"], r["category"], r["base_price"], r["cost"],
                 Station(r["kitchen_station"]), r["prep_minutes"], r["available"],
                 r["updated_at"])
        for r in await fetch(query("q_menu_items"), tenant, sorted(set(ids)))
    ]


async def menu_item(fetch: Fetch, tenant: str, item_id: int) -> MenuItem:
    """A catalogue item.

    :raises MissingRow: no such item.
    """
    found = await menu_items(fetch, tenant, [item_id])
    return MissingRow.first(found, "rest.menu_items", tenant, item_id)


async def location_menu_sets(fetch: Fetch, tenant: str,
                             location_ids: Iterable[int]) -> dict[int, Scores]:
    """Location -> its active menu ids (scored by id), for the locations that exist
    (an empty set for one without an active menu)."""
    out: dict[int, Scores] = {}
    for r in await fetch(query("q_location_menu_sets"), tenant, sorted(set(location_ids))):
        members = out.setdefault(r["location_id"], {})
        if r["menu_id"] is not None:
            members[r["menu_id"]] = float(r["menu_id"])
    return out


async def location_menus(fetch: Fetch, tenant: str, location_id: int) -> Scores:
    """The whole ``rest.location_menus`` set of a location: menu id -> menu id.

    :raises MissingRow: no such location.
    """
    found = await location_menu_sets(fetch, tenant, [location_id])
    if location_id not in found:
        raise MissingRow("rest.locations", tenant, location_id)
    return found[location_id]


async def menu_category_sets(
    fetch: Fetch, tenant: str, menu_ids: Iterable[int], categories: Iterable[str]
) -> dict[tuple[int, str], Scores]:
    """``(menu, category)`` -> item id -> menu position, for every menu that exists and
    every category asked (an empty set where the menu lists none of the category)."""
    ids, names = sorted(set(menu_ids)), sorted(set(categories))
    out: dict[tuple[int, str], Scores] = {}
    for r in await fetch(query("q_menu_category_sets"), tenant, ids, names):
        for category in names:
            out.setdefault((r["menu_id"], category), {})
        if r["item_id"] is not None:
            out[(r["menu_id"], r["category"])][r["item_id"]] = float(r["position"])
    return out


async def menu_category(fetch: Fetch, tenant: str, menu_id: int, category: str) -> Scores:
    """The whole ``rest.menu_category`` set: the category's item ids -> menu position.

    :raises MissingRow: no such menu.
    """
    found = await menu_category_sets(fetch, tenant, [menu_id], [category])
    if (menu_id, category) not in found:
        raise MissingRow("rest.menus", tenant, menu_id)
    return found[(menu_id, category)]


async def item_sales(
    fetch: Fetch, tenant: str, location_id: int, item_id: int, today: dt.date | None = None
) -> ItemSales:
    """An item's recent sales at a location from the view; zeros when it sold nothing
    (the view has no rows for it: a fact worth caching, not an absent row)."""
    day = today or utc_today()
    pair = (location_id, item_id)
    rows = (await _sales_days(fetch, tenant, [pair], day)).get(pair, [])
    days = [(d, q) for d, q, _ in rows]
    recent = [(d, q, r) for d, q, r in rows if (day - d).days < predict.POPULARITY_WINDOW_DAYS]
    return ItemSales(
        location_id, item_id, day,
        quantity_7d=sum(q for d, q, _ in rows if (day - d).days < predict.RECENT_DAYS),
        quantity_28d=sum(q for _, q, _ in recent),
        revenue_28d=sum((r for _, _, r in recent), _ZERO),
        popularity=predict.popularity(days, day),
        demand_ratio=predict.demand_ratio(days, day),
    )


# --------------------------------------------------------------------------- tables


async def table_availabilities(
    fetch: Fetch, tenant: str, keys: Iterable[tuple[int, dt.date]]
) -> dict[tuple[int, dt.date], TableAvailability]:
    """``(location, day)`` -> the location's table grid of the day with its summary, for
    the locations that exist (an empty grid for one without active tables). Two
    queries: the locations' tables, and their bookings on the days asked."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    location_ids = sorted({loc for loc, _ in wanted})
    tables: dict[int, list[DiningTable]] = {}
    for r in await fetch(query("q_location_tables"), tenant, location_ids):
        found = tables.setdefault(r["location_id"], [])
        if r["table_id"] is not None:
            found.append(DiningTable(r["table_id"], r["seats"]))
    taken: dict[tuple[int, dt.date], list[tuple[str, int]]] = defaultdict(list)
    days = sorted({day for _, day in wanted})
    for r in await fetch(query("q_day_bookings"), tenant, sorted(tables), days):
        taken[(r["location_id"], r["day"])].append((r["slot"], r["table_id"]))
    return {
        (loc, day): availability.build(loc, day, tables[loc], taken.get((loc, day), []))
        for loc, day in wanted if loc in tables
    }


async def table_availability(
    fetch: Fetch, tenant: str, location_id: int, day: dt.date
) -> TableAvailability:
    """A location's table grid of ``day`` with its summary (an empty grid when the
    location has no active table).

    :raises MissingRow: no such location.
    """
    found = await table_availabilities(fetch, tenant, [(location_id, day)])
    if (location_id, day) not in found:
        raise MissingRow("rest.locations", tenant, location_id)
    return found[(location_id, day)]


# --------------------------------------------------------------------------- kitchen


async def tickets(fetch: Fetch, tenant: str, order_ids: Iterable[int]) -> list[KitchenTicket]:
    """Kitchen tickets of these orders, by id (absent orders skipped; an order without
    lines is a ticket without lines)."""
    by_order: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in await fetch(query("q_tickets"), tenant, sorted(set(order_ids))):
        by_order[r["order_id"]].append(r)
    out = []
    for order_id, rows in by_order.items():
        head = rows[0]
        lines = [TicketLine(r["line"], r["item_id"], r["name"], r["quantity"],
                            Station(r["station"]), r["done"])
                 for r in rows if r["line"] is not None]
        out.append(KitchenTicket(order_id, head["location_id"], head["table_label"],
                                 OrderPriority(head["priority"]), head["placed_at"], lines))
    return out


async def ticket(fetch: Fetch, tenant: str, order_id: int) -> KitchenTicket:
    """The kitchen ticket of an order.

    :raises MissingRow: no such order.
    """
    found = await tickets(fetch, tenant, [order_id])
    return MissingRow.first(found, "rest.orders", tenant, order_id)


async def kitchen_queues(
    fetch: Fetch, tenant: str, location_ids: Iterable[int],
    stations: Iterable[Station] = tuple(Station),
) -> dict[tuple[int, Station], Scores]:
    """``(location, station)`` -> the whole station queue: every open order with a line
    still to cook there -> its :func:`~thorbis_restaurant.scoring.kitchen_score`, for
    the locations that exist and the stations asked (empty queues included)."""
    chosen = set(stations)
    asked = [s for s in Station if s in chosen]
    out: dict[tuple[int, Station], Scores] = {}
    rows = await fetch(query("q_kitchen_queues"), tenant, sorted(set(location_ids)),
                       [s.value for s in asked])
    for r in rows:
        for station in asked:
            out.setdefault((r["location_id"], station), {})
        if r["order_id"] is not None:
            score = kitchen_score(OrderPriority(r["priority"]), r["placed_at"])
            out[(r["location_id"], Station(r["station"]))][r["order_id"]] = score
    return out


async def kitchen_queue(fetch: Fetch, tenant: str, location_id: int,
                        station: Station) -> Scores:
    """The whole ``rest.kitchen_queue`` set of a station: order id -> queue score.

    :raises MissingRow: no such location.
    """
    found = await kitchen_queues(fetch, tenant, [location_id], [station])
    if (location_id, station) not in found:
        raise MissingRow("rest.locations", tenant, location_id)
    return found[(location_id, station)]


def boards_of(queues: Mapping[tuple[int, Station], Scores]) -> dict[int, Scores]:
    """Location -> its board (every order queued at one of its stations), from the
    station queues of every station of those locations."""
    out: dict[int, Scores] = {}
    for (location_id, _), members in queues.items():
        out.setdefault(location_id, {}).update(members)
    return out


async def kitchen_boards(fetch: Fetch, tenant: str,
                         location_ids: Iterable[int]) -> dict[int, Scores]:
    """Location -> the whole ``rest.kitchen_board`` set (order id -> queue score), for
    the locations that exist."""
    return boards_of(await kitchen_queues(fetch, tenant, location_ids))


async def kitchen_board(fetch: Fetch, tenant: str, location_id: int) -> Scores:
    """The whole ``rest.kitchen_board`` set of a location: every order queued at one of
    its stations -> its queue score.

    :raises MissingRow: no such location.
    """
    found = await kitchen_boards(fetch, tenant, [location_id])
    if location_id not in found:
        raise MissingRow("rest.locations", tenant, location_id)
    return found[location_id]


# --------------------------------------------------------------------------- reports


async def turnover_day(fetch: Fetch, tenant: str, location_id: int, day: dt.date) -> TurnoverDay:
    """A location's turnover of ``day`` from the view; a day without completed seatings
    is zeros (a quiet day is a fact worth caching)."""
    found = await fetch(query("q_turnover_day"), tenant, location_id, day)
    if not found:
        return TurnoverDay(location_id, day, 0, 0, 0, _ZERO, None)
    r = found[0]
    return TurnoverDay(r["location_id"], r["day"], int(r["seatings"]), int(r["covers"]),
                       int(r["tables"]), r["turns_per_table"], r["avg_dining_minutes"])
