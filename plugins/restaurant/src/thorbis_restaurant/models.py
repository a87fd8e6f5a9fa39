"""The values the restaurant vertical caches: enums of the domain and frozen attrs
records, one per cached shape.

Records are plain data (no validators): the cache's codec writes them through cattrs and
the contract kit builds arbitrary instances from the field types. Rows map onto fields in
:mod:`thorbis_restaurant.rows`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum

import attrs

__all__ = [
    "DiningTable",
    "ItemSales",
    "KitchenTicket",
    "Menu",
    "MenuItem",
    "MenuLine",
    "OrderPriority",
    "QueuedOrder",
    "Station",
    "TableAvailability",
    "TicketLine",
    "TurnoverDay",
]


class Station(enum.Enum):
    """A kitchen station (the seed's ``kitchenStation || 'general'``).

    A closed set, so a location's station queues are enumerable without an index.
    """

    GRILL = "grill"
    FRY = "fry"
    SAUTE = "saute"
    COLD = "cold"
    PASTRY = "pastry"
    BAR = "bar"
    GENERAL = "general"


class OrderPriority(enum.Enum):
    """Priority class of a kitchen order; head starts in :mod:`thorbis_restaurant.scoring`."""

    RUSH = "rush"  #: remade dish, allergy redo, a table waiting too long
    VIP = "vip"
    NORMAL = "normal"


# --------------------------------------------------------------------------- menus


@attrs.frozen(slots=True)
class MenuItem:
    """A catalogue item (``rest.menu_item``): one ``rest.menu_items`` row."""

    id: int
    name: str
    category: str
    base_price: decimal.Decimal
    cost: decimal.Decimal
    kitchen_station: Station
    prep_minutes: int
    available: bool
    updated_at: dt.datetime


@attrs.frozen(slots=True)
class MenuLine:
    """An item as a menu shows it: list price, today's dynamic price and popularity.

    :ivar base_price: the item's list price (``rest.menu_items.base_price``).
    :ivar price: the dynamic price (:func:`thorbis_restaurant.predict.dynamic_price`).
    :ivar popularity: decayed recent sales (:func:`thorbis_restaurant.predict.popularity`).
    :ivar demand_ratio: last 7 days' sales over the 4 weeks before, per week.
    """

    item_id: int
    name: str
    category: str
    position: int
    base_price: decimal.Decimal
    price: decimal.Decimal
    popularity: float
    demand_ratio: float
    margin: decimal.Decimal
    station: Station
    available: bool


@attrs.frozen(slots=True)
class Menu:
    """A menu of a location (``rest.menu``) with its lines by category and position.

    :ivar categories: category names in menu order (first appearance by position).
    :ivar as_of: the UTC day popularity and prices were computed for.
    """

    menu_id: int
    location_id: int
    name: str
    categories: list[str]
    lines: list[MenuLine]
    as_of: dt.date

    def line(self, item_id: int) -> MenuLine | None:
        """The line of ``item_id``, or None when the menu does not list it."""
        return next((line for line in self.lines if line.item_id == item_id), None)


# --------------------------------------------------------------------------- tables


@attrs.frozen(slots=True)
class DiningTable:
    """A table of a location: id and seats."""

    table_id: int
    seats: int


@attrs.frozen(slots=True)
class TableAvailability:
    """A location's tables on one day (``rest.table_availability``, a hash).

    ``booked`` maps a slot (``"HH:MM"``, location time) to the sorted ids of the tables
    taken in it; the summary fields are :func:`thorbis_restaurant.availability.summarize`
    of the rest and are written in the same atomic update as ``booked``.
    """

    location_id: int
    day: dt.date
    slots: list[str]
    tables: list[DiningTable]
    booked: dict[str, list[int]]
    total_table_slots: int
    booked_table_slots: int
    free_table_slots: int
    busiest_slot: str | None


# --------------------------------------------------------------------------- kitchen


@attrs.frozen(slots=True)
class TicketLine:
    """A line of a kitchen ticket."""

    line: int
    item_id: int
    name: str
    quantity: int
    station: Station
    done: bool


@attrs.frozen(slots=True)
class KitchenTicket:
    """A kitchen order (``rest.kitchen_order``): what the stations cook."""

    order_id: int
    location_id: int
    table_label: str
    priority: OrderPriority
    placed_at: dt.datetime
    lines: list[TicketLine]

    def stations(self) -> list[Station]:
        """The stations with a line still to cook, in enum order."""
        pending = {line.station for line in self.lines if not line.done}
        return [s for s in Station if s in pending]


@attrs.frozen(slots=True)
class QueuedOrder:
    """A result of the next-orders pattern: an order id, its queue score, its ticket
    (None when the ticket is not cached)."""

    order_id: int
    score: float
    ticket: KitchenTicket | None


# --------------------------------------------------------------------------- reports


@attrs.frozen(slots=True)
class ItemSales:
    """An item's recent sales at a location (``rest.item_sales``), from the
    ``rest.item_sales_daily`` view, with the derived popularity and demand ratio."""

    location_id: int
    item_id: int
    as_of: dt.date
    quantity_7d: int
    quantity_28d: int
    revenue_28d: decimal.Decimal
    popularity: float
    demand_ratio: float


@attrs.frozen(slots=True)
class TurnoverDay:
    """One row of the ``rest.table_turnover`` view (``rest.turnover_day``)."""

    location_id: int
    day: dt.date
    seatings: int
    covers: int
    tables: int
    turns_per_table: decimal.Decimal
    avg_dining_minutes: decimal.Decimal | None
