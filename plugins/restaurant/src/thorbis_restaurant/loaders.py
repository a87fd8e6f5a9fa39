"""Loads the vertical's records from PostgreSQL, for warmers and for host loaders.

Every function takes ``fetch``: ``async (sql, *args) -> list of row mappings`` (the
shape of :attr:`thorbis_cache.declarations.WarmContext.fetch`; ``pool.fetch`` or
``conn.fetch`` of asyncpg), so this module runs SQL without importing a driver::

    menu = await cache.get_or_load(
        MENU.key(tenant, menu_id=3), lambda: loaders.menu(pool.fetch, tenant, 3)
    )

Queries live in ``sql/q_*.sql``; every one is scoped to one tenant.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from thorbis_cache import declarations
from thorbis_cache.errors import MissingRow

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
from thorbis_restaurant.sqlfiles import query

__all__ = [
    "Fetch",
    "MissingRow",
    "active_menus",
    "item_sales",
    "location_menus",
    "locations",
    "menu",
    "menu_items",
    "open_order_ids",
    "table_availability",
    "tickets",
    "turnover_day",
    "utc_today",
]

#: ``async (sql, *args) -> rows``: how loaders reach the database.
Fetch = declarations.Fetch

_ZERO = decimal.Decimal("0.00")


def utc_today() -> dt.date:
    """Today in UTC (the day the sales view buckets by)."""
    return dt.datetime.now(dt.UTC).date()


# --------------------------------------------------------------------------- menus


async def _sales_days(
    fetch: Fetch, tenant: str, location_id: int, item_ids: Sequence[int], today: dt.date
) -> dict[int, list[tuple[dt.date, int, decimal.Decimal]]]:
    out: dict[int, list[tuple[dt.date, int, decimal.Decimal]]] = defaultdict(list)
    if item_ids:
        found = await fetch(query("q_item_sales_days"), tenant, location_id, list(item_ids), today)
        for r in found:
            out[r["item_id"]].append((r["sales_day"], int(r["quantity"]), r["revenue"]))
    return out


async def menu(fetch: Fetch, tenant: str, menu_id: int, today: dt.date | None = None) -> Menu:
    """A menu with its lines; popularity and dynamic prices for ``today`` (default: UTC
    today) from the ``rest.item_sales_daily`` view (as of its last refresh).

    :raises MissingRow: no such menu.
    """
    day = today or utc_today()
    head = await fetch(query("q_menu"), tenant, menu_id)
    if not head:
        raise MissingRow("rest.menus", tenant, menu_id)
    location_id = int(head[0]["location_id"])
    rows = await fetch(query("q_menu_lines"), tenant, menu_id)
    sales = await _sales_days(fetch, tenant, location_id, [r["item_id"] for r in rows], day)
    lines = []
    categories: list[str] = []
    for r in rows:
        days = [(d, q) for d, q, _ in sales.get(r["item_id"], ())]
        ratio = predict.demand_ratio(days, day)
        base: decimal.Decimal = r["base_price"]
        if r["category"] not in categories:
            categories.append(r["category"])
        lines.append(MenuLine(
            item_id=r["item_id"], name=r["name"], category=r["category"],
            position=r["position"], base_price=base,
            price=predict.dynamic_price(base, ratio),
            popularity=predict.popularity(days, day), demand_ratio=ratio,
            margin=base - r["cost"], station=Station(r["kitchen_station"]),
            available=r["available"],
        ))
    return Menu(menu_id, location_id, head[0]["name"], categories, lines, day)


async def menu_items(fetch: Fetch, tenant: str, ids: Iterable[int]) -> list[MenuItem]:
    """Catalogue items with these ids (absent ids skipped), by id."""
    return [
        MenuItem(r["id"], r["name"], r["category"], r["base_price"], r["cost"],
                 Station(r["kitchen_station"]), r["prep_minutes"], r["available"],
                 r["updated_at"])
        for r in await fetch(query("q_menu_items"), tenant, list(ids))
    ]


async def location_menus(fetch: Fetch, tenant: str, location_id: int) -> list[int]:
    """The active menu ids of a location, ascending."""
    return [r["id"] for r in await fetch(query("q_location_menus"), tenant, location_id)]


async def active_menus(fetch: Fetch, tenant: str, limit: int) -> list[tuple[int, int]]:
    """``(menu id, location id)`` of at most ``limit`` active menus, by id."""
    return [(r["id"], r["location_id"])
            for r in await fetch(query("q_active_menus"), tenant, limit)]


async def locations(fetch: Fetch, tenant: str, limit: int = 1000) -> list[int]:
    """The location ids of a tenant (at most ``limit``), ascending."""
    return [r["id"] for r in await fetch(query("q_locations"), tenant, limit)]


async def item_sales(
    fetch: Fetch, tenant: str, location_id: int, item_id: int, today: dt.date | None = None
) -> ItemSales:
    """An item's recent sales at a location from the view; zeros when it sold nothing."""
    day = today or utc_today()
    rows = (await _sales_days(fetch, tenant, location_id, [item_id], day)).get(item_id, [])
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


async def table_availability(
    fetch: Fetch, tenant: str, location_id: int, day: dt.date
) -> TableAvailability:
    """A location's table grid of ``day`` with its summary (an empty grid when the
    location has no tables)."""
    tables = [DiningTable(r["id"], r["seats"])
              for r in await fetch(query("q_tables"), tenant, location_id)]
    taken = [(r["slot"], r["table_id"])
             for r in await fetch(query("q_day_bookings"), tenant, location_id, day)]
    return availability.build(location_id, day, tables, taken)


# --------------------------------------------------------------------------- kitchen


async def tickets(fetch: Fetch, tenant: str, order_ids: Iterable[int]) -> list[KitchenTicket]:
    """Kitchen tickets of these orders (orders without lines or absent are skipped), by id."""
    by_order: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for r in await fetch(query("q_tickets"), tenant, list(order_ids)):
        by_order[r["order_id"]].append(r)
    out = []
    for order_id, rows in by_order.items():
        head = rows[0]
        lines = [TicketLine(r["line"], r["item_id"], r["name"], r["quantity"],
                            Station(r["station"]), r["done"]) for r in rows]
        out.append(KitchenTicket(order_id, head["location_id"], head["table_label"],
                                 OrderPriority(head["priority"]), head["placed_at"], lines))
    return out


async def open_order_ids(fetch: Fetch, tenant: str, limit: int) -> list[int]:
    """Ids of at most ``limit`` open orders, oldest first."""
    return [r["id"] for r in await fetch(query("q_open_orders"), tenant, limit)]


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
