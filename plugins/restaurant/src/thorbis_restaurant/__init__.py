"""thorbis-restaurant: the restaurant vertical of thorbis-cache.

Loaded by thorbis-cache through the ``thorbis_cache.plugins`` entry point
(:mod:`thorbis_restaurant.plugin`). Importing this package connects to nothing.

Modules, one concept each:

* :mod:`~thorbis_restaurant.models` -- enums and attrs records;
* :mod:`~thorbis_restaurant.schemas` -- the ``rest.*`` key schemas and their tags;
* :mod:`~thorbis_restaurant.scoring` -- the kitchen queue priority;
* :mod:`~thorbis_restaurant.predict` -- popularity, demand ratio, dynamic price;
* :mod:`~thorbis_restaurant.availability` -- table grids and their summary;
* :mod:`~thorbis_restaurant.patterns` -- named reads (cache only, or through with ``fetch``);
* :mod:`~thorbis_restaurant.writers` -- menus, bookings, the kitchen display;
* :mod:`~thorbis_restaurant.loaders` -- one loader per key schema (read-through and warmers);
* :mod:`~thorbis_restaurant.views`, :mod:`~thorbis_restaurant.rules`,
  :mod:`~thorbis_restaurant.warmers`, :mod:`~thorbis_restaurant.permissions`;
* :mod:`~thorbis_restaurant.datagen` -- the deterministic data set;
* :mod:`~thorbis_restaurant.demo` -- its part in ``thorbis-cache demo``.
"""

from __future__ import annotations

from thorbis_restaurant.models import (
    DiningTable,
    ItemSales,
    KitchenTicket,
    Menu,
    MenuItem,
    MenuLine,
    OrderPriority,
    QueuedOrder,
    Station,
    TableAvailability,
    TicketLine,
    TurnoverDay,
)
from thorbis_restaurant.predict import demand_ratio, dynamic_price, popularity
from thorbis_restaurant.scoring import kitchen_score

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
    "demand_ratio",
    "dynamic_price",
    "kitchen_score",
    "popularity",
]

__version__ = "0.1.0"
