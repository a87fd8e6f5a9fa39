"""The vertical's invalidation rules: which cache entries a change to a table makes stale.

Declared here, run by the core's outbox worker. Nothing scans: the seed's
``KEYS ...:order:*`` clearing becomes exact keys and tags.

**Exactly the menus that contain an item.** A rule sees only the columns of the row that
changed, and a ``rest.menu_items`` row does not know its menus. So ``sql/tables.sql``
keeps ``rest.menu_entries.item_price`` equal to the item's ``base_price`` by trigger: a
price change updates the entries of exactly the menus listing the item, in the same
transaction, and :data:`MENU_ON_ENTRY_CHANGE` names each such menu's key from its entry
(``menu_id``). Menus not listing the item get no outbox row and stay cached.

The kitchen queues follow the same pattern: ``rest.order_items`` carries copies of its
order's location, priority and status, so a change of an order names the station queues
``(location, station)`` of its lines.

**Absence.** The schemas that cache a missing row (``negative_ttl``: menus, catalogue
items, kitchen tickets) each have a rule here that fires on the INSERT of their row
(:data:`MENU_ENTITY`, :data:`MENU_ITEM_ENTITY`, :data:`KITCHEN_TICKET`): a row created
after a miss is read at once, not after the absence expires.

**View mirrors are left to their refresh.** No rule targets ``rest.item_sales`` or
``rest.turnover_day``, by schema or tag: they read only the materialized views, which a
base-table change does not alter until they refresh, and the refresh drops them.

Engine contract relied upon: for an UPDATE a schema target names the key of the old and
of the new row (an order moved between stations leaves two queues stale); a NULL
parameter names no key; ``significant_columns`` narrows UPDATEs only.
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import InvalidationRule, Operation, RuleTarget

from thorbis_restaurant.schemas import (
    KITCHEN_BOARD,
    KITCHEN_ORDER,
    KITCHEN_QUEUE,
    LOCATION_MENUS,
    MENU,
    MENU_ITEM,
    TABLE_AVAILABILITY,
    TAG_AVAILABILITY,
    TAG_MENU_CATEGORIES,
    TAG_MENUS,
)

__all__ = [
    "ALL_RULES",
    "AVAILABILITY_ON_RESERVATION",
    "AVAILABILITY_ON_TABLES",
    "ITEM_DETAILS",
    "KITCHEN_ON_LINE",
    "KITCHEN_ON_ORDER",
    "KITCHEN_TICKET",
    "MENU_ENTITY",
    "MENU_ITEM_ENTITY",
    "MENU_MEMBERSHIP",
    "MENU_ON_ENTRY_CHANGE",
]

_INSERT, _UPDATE, _DELETE = Operation.INSERT, Operation.UPDATE, Operation.DELETE
_ALL = (_INSERT, _UPDATE, _DELETE)

# ---- menus

MENU_ITEM_ENTITY = InvalidationRule(
    "rest.menu_item_entity",
    table="rest.menu_items",
    # INSERT too: it drops a cached absence (rest.menu_item has a negative_ttl).
    operations=_ALL,
    targets=(RuleTarget(schema=MENU_ITEM.name, params={"item_id": "id"}),),
)

MENU_ON_ENTRY_CHANGE = InvalidationRule(
    "rest.menu_on_entry_change",
    table="rest.menu_entries",
    operations=_ALL,
    # item_price moves with the item's base price (trigger): the price fan-out lands here.
    significant_columns=("item_price", "position", "menu_id", "item_id"),
    targets=(RuleTarget(schema=MENU.name, params={"menu_id": "menu_id"}),),
)

MENU_MEMBERSHIP = InvalidationRule(
    "rest.menu_membership",
    table="rest.menu_entries",
    # Category sets hold ids by position; entries added, dropped or moved reshuffle them.
    # The entry does not know its item's category, so the sets go by tag (menu edits
    # are rare next to reads).
    operations=_ALL,
    significant_columns=("position", "menu_id", "item_id"),
    targets=(RuleTarget(tag=TAG_MENU_CATEGORIES),),
)

ITEM_DETAILS = InvalidationRule(
    "rest.item_details",
    table="rest.menu_items",
    operations=(_UPDATE,),
    # What every menu line shows besides the price (the price has its exact fan-out).
    significant_columns=("name", "category", "cost", "kitchen_station", "available"),
    targets=(RuleTarget(tag=TAG_MENUS), RuleTarget(tag=TAG_MENU_CATEGORIES)),
)

MENU_ENTITY = InvalidationRule(
    "rest.menu_entity",
    table="rest.menus",
    # INSERT drops a cached absence of the menu (rest.menu has a negative_ttl).
    operations=_ALL,
    significant_columns=("name", "active", "location_id"),
    targets=(
        RuleTarget(schema=MENU.name, params={"menu_id": "id"}),
        RuleTarget(schema=LOCATION_MENUS.name, params={"location_id": "location_id"}),
    ),
)

# ---- tables

AVAILABILITY_ON_RESERVATION = InvalidationRule(
    "rest.availability_on_reservation",
    table="rest.reservations",
    operations=_ALL,
    significant_columns=("location_id", "day", "slot", "table_id", "status"),
    targets=(
        RuleTarget(schema=TABLE_AVAILABILITY.name,
                   params={"location_id": "location_id", "day": "day"}),
    ),
)

AVAILABILITY_ON_TABLES = InvalidationRule(
    "rest.availability_on_tables",
    table="rest.dining_tables",
    operations=_ALL,
    # A table added, removed or resized changes every day's grid of its location.
    significant_columns=("location_id", "seats", "active"),
    targets=(RuleTarget(tag=TAG_AVAILABILITY),),
)

# ---- kitchen

KITCHEN_TICKET = InvalidationRule(
    "rest.kitchen_ticket",
    table="rest.orders",
    # INSERT too: it drops a cached absence (rest.kitchen_order has a negative_ttl).
    operations=_ALL,
    targets=(RuleTarget(schema=KITCHEN_ORDER.name, params={"order_id": "id"}),),
)

KITCHEN_ON_ORDER = InvalidationRule(
    "rest.kitchen_on_order",
    table="rest.orders",
    operations=_ALL,
    significant_columns=("status", "priority", "location_id", "placed_at"),
    targets=(RuleTarget(schema=KITCHEN_BOARD.name, params={"location_id": "location_id"}),),
)

KITCHEN_ON_LINE = InvalidationRule(
    "rest.kitchen_on_line",
    table="rest.order_items",
    operations=_ALL,
    significant_columns=(
        "station", "done", "quantity", "item_id", "location_id", "order_priority",
        "order_status",
    ),
    targets=(
        RuleTarget(schema=KITCHEN_QUEUE.name,
                   params={"location_id": "location_id", "station": "station"}),
        RuleTarget(schema=KITCHEN_ORDER.name, params={"order_id": "order_id"}),
        # The board holds the orders with a line still to cook: the last line done
        # takes the order off it.
        RuleTarget(schema=KITCHEN_BOARD.name, params={"location_id": "location_id"}),
    ),
)

#: Every rule, in the order the plugin registers them.
ALL_RULES: tuple[InvalidationRule, ...] = (
    MENU_ITEM_ENTITY,
    MENU_ON_ENTRY_CHANGE,
    MENU_MEMBERSHIP,
    ITEM_DETAILS,
    MENU_ENTITY,
    AVAILABILITY_ON_RESERVATION,
    AVAILABILITY_ON_TABLES,
    KITCHEN_TICKET,
    KITCHEN_ON_ORDER,
    KITCHEN_ON_LINE,
)
