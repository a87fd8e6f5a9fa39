"""The key schemas of the restaurant vertical.

Keys (after the cache prefix; ``{t}`` is the tenant hash tag) and what they hold:

=============================================  =====  ============================================
key                                            kind   holds
=============================================  =====  ============================================
``{t}:rest.menu:<menu>``                       value  :class:`Menu` with lines, prices, popularity
``{t}:rest.menu_item:<item>``                  value  :class:`MenuItem` (a catalogue row)
``{t}:rest.location_menus:<location>``         zset   menu ids of a location (score: menu id)
``{t}:rest.menu_category:<menu>:<category>``   zset   item ids of a category of a menu by position
``{t}:rest.table_availability:<loc>:<day>``    hash   :class:`TableAvailability`, grid + summary
``{t}:rest.kitchen_order:<order>``             value  :class:`KitchenTicket`
``{t}:rest.kitchen_queue:<loc>:<station>``     zset   order ids queued at a station by priority
``{t}:rest.kitchen_board:<loc>``               zset   every queued order id of a location (index)
``{t}:rest.item_sales:<loc>:<item>``           value  :class:`ItemSales` (from the sales view)
``{t}:rest.turnover_day:<loc>:<day>``          value  :class:`TurnoverDay` (from the turnover view)
=============================================  =====  ============================================

Every schema has a loader in :mod:`thorbis_restaurant.loaders` (the database holds all
of it, the kitchen display included), so every entry can be read through the cache.

TTLs follow the seed where it gave one (menus and items 30 min, tables 2 h, kitchen
orders 1 h, station queues 30 min); entries mirroring a view live about one refresh
interval and are also dropped by the view's refresh tags.

**Absence.** The entities read by id -- menus, catalogue items, kitchen tickets -- cache
"no such row" for :data:`NEGATIVE_TTL` seconds (``negative_ttl``), so a client asking
for an id that does not exist reaches the database once a minute, not on every read.
Each is covered by a rule that fires on the INSERT of its row (``rest.menu_entity``,
``rest.menu_item_entity``, ``rest.kitchen_ticket`` in :mod:`thorbis_restaurant.rules`),
which drops the cached absence when the row appears.

**View mirrors.** ``rest.item_sales`` and ``rest.turnover_day`` read nothing but the
views ``rest.item_sales_daily`` and ``rest.table_turnover`` (``mirrors=``): a change of
a base table does not change them until the view refreshes, so no rule targets them and
the view's refresh drops them through the tag they share with it. ``rest.menu`` reads
the sales view too, for popularity and dynamic prices, but it is no mirror: its lines and
list prices come from the base tables, and the exact price rule must reach it. It
carries the sales view's tag, so both a price change and a refresh drop it.

Tags: ``rest.menus`` (menus and location menu lists), ``rest.menu_items``,
``rest.menu_categories``, ``rest.availability``, ``rest.kitchen``, ``rest.reports``
(every view mirror; no rule targets it), ``rest.item_sales`` (the sales view's refresh
tag: sales rows *and menus*), ``rest.turnover`` (the turnover view's refresh tag).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from thorbis_cache.cache.keys import KeySchema, SchemaKind

from thorbis_restaurant.models import (
    ItemSales,
    KitchenTicket,
    Menu,
    MenuItem,
    Station,
    TableAvailability,
    TurnoverDay,
)

__all__ = [
    "ALL_SCHEMAS",
    "ITEM_SALES",
    "KITCHEN_BOARD",
    "KITCHEN_ORDER",
    "KITCHEN_QUEUE",
    "LOCATION_MENUS",
    "MENU",
    "MENU_CATEGORY",
    "MENU_ITEM",
    "NEGATIVE_TTL",
    "TABLE_AVAILABILITY",
    "TAGS",
    "TAG_AVAILABILITY",
    "TAG_ITEM_SALES",
    "TAG_KITCHEN",
    "TAG_MENUS",
    "TAG_MENU_CATEGORIES",
    "TAG_MENU_ITEMS",
    "TAG_REPORTS",
    "TAG_TURNOVER",
    "TURNOVER_DAY",
]

_MINUTE = 60.0
_HOUR = 3600.0

#: Seconds an entity read by id stays cached as absent (its INSERT rule drops it sooner).
NEGATIVE_TTL = _MINUTE

TAG_MENUS = "rest.menus"
TAG_MENU_ITEMS = "rest.menu_items"
TAG_MENU_CATEGORIES = "rest.menu_categories"
TAG_AVAILABILITY = "rest.availability"
TAG_KITCHEN = "rest.kitchen"
TAG_REPORTS = "rest.reports"
TAG_ITEM_SALES = "rest.item_sales"
TAG_TURNOVER = "rest.turnover"

MENU: KeySchema[Menu] = KeySchema(
    "rest.menu",
    Menu,
    params={"menu_id": int},
    ttl=30 * _MINUTE,  # seed: setex 1800
    ttl_jitter=0.1,
    # Prices and popularity come from the sales view: its refresh drops menus too.
    tags=(TAG_MENUS, TAG_ITEM_SALES),
    negative_ttl=NEGATIVE_TTL,  # rule rest.menu_entity fires on INSERT of rest.menus
    description="a menu with its lines, dynamic prices and popularity",
)

MENU_ITEM: KeySchema[MenuItem] = KeySchema(
    "rest.menu_item",
    MenuItem,
    params={"item_id": int},
    ttl=30 * _MINUTE,
    ttl_jitter=0.1,
    tags=(TAG_MENU_ITEMS,),
    negative_ttl=NEGATIVE_TTL,  # rule rest.menu_item_entity fires on INSERT of rest.menu_items
    description="a catalogue item",
)

LOCATION_MENUS: KeySchema[int] = KeySchema(
    "rest.location_menus",
    int,
    params={"location_id": int},
    ttl=30 * _MINUTE,
    ttl_jitter=0.1,
    tags=(TAG_MENUS,),
    kind=SchemaKind.ZSET,
    description="the active menu ids of a location",
)

MENU_CATEGORY: KeySchema[int] = KeySchema(
    "rest.menu_category",
    int,
    params={"menu_id": int, "category": str},
    ttl=30 * _MINUTE,
    ttl_jitter=0.1,
    tags=(TAG_MENU_CATEGORIES,),
    kind=SchemaKind.ZSET,
    description="item ids of one category of a menu, scored by menu position",
)

TABLE_AVAILABILITY: KeySchema[TableAvailability] = KeySchema(
    "rest.table_availability",
    TableAvailability,
    params={"location_id": int, "day": dt.date},
    ttl=2 * _HOUR,  # seed: expire 7200
    tags=(TAG_AVAILABILITY,),
    kind=SchemaKind.HASH,
    description="a location's table grid of one day with its summary, versioned",
)

KITCHEN_ORDER: KeySchema[KitchenTicket] = KeySchema(
    "rest.kitchen_order",
    KitchenTicket,
    params={"order_id": int},
    ttl=_HOUR,  # seed: setex 3600
    tags=(TAG_KITCHEN,),
    negative_ttl=NEGATIVE_TTL,  # rule rest.kitchen_ticket fires on INSERT of rest.orders
    description="a kitchen ticket: the lines each station cooks",
)

KITCHEN_QUEUE: KeySchema[int] = KeySchema(
    "rest.kitchen_queue",
    int,
    params={"location_id": int, "station": Station},
    ttl=30 * _MINUTE,  # seed: expire 1800
    tags=(TAG_KITCHEN,),
    kind=SchemaKind.ZSET,
    description="order ids queued at a station, lowest priority score first",
)

KITCHEN_BOARD: KeySchema[int] = KeySchema(
    "rest.kitchen_board",
    int,
    params={"location_id": int},
    # Outlives the tickets it indexes, so clearing a location still finds them.
    ttl=_HOUR,
    tags=(TAG_KITCHEN,),
    kind=SchemaKind.ZSET,
    description="every order id queued at a location (the index used to clear it)",
)

ITEM_SALES: KeySchema[ItemSales] = KeySchema(
    "rest.item_sales",
    ItemSales,
    params={"location_id": int, "item_id": int},
    ttl=30 * _MINUTE,  # the view refreshes every 30 minutes
    ttl_jitter=0.1,
    tags=(TAG_REPORTS, TAG_ITEM_SALES),
    mirrors="rest.item_sales_daily",
    description="an item's recent sales at a location, popularity and demand ratio",
)

TURNOVER_DAY: KeySchema[TurnoverDay] = KeySchema(
    "rest.turnover_day",
    TurnoverDay,
    params={"location_id": int, "day": dt.date},
    ttl=_HOUR,  # the view refreshes hourly
    ttl_jitter=0.1,
    tags=(TAG_REPORTS, TAG_TURNOVER),
    mirrors="rest.table_turnover",
    description="a location's table turnover of one day, from the view",
)

#: Every schema, in the order the plugin registers them.
ALL_SCHEMAS: tuple[KeySchema[Any], ...] = (
    MENU,
    MENU_ITEM,
    LOCATION_MENUS,
    MENU_CATEGORY,
    TABLE_AVAILABILITY,
    KITCHEN_ORDER,
    KITCHEN_QUEUE,
    KITCHEN_BOARD,
    ITEM_SALES,
    TURNOVER_DAY,
)

#: Every tag a schema of this plugin carries.
TAGS: frozenset[str] = frozenset(tag for schema in ALL_SCHEMAS for tag in schema.tags)
