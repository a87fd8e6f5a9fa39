"""A deterministic restaurant data set for N tenants: demo, tests and benchmarks.

:func:`generate` builds rows for every ``rest`` table; :func:`load` COPYs them into
PostgreSQL. The same ``seed``, tenants, size and ``reference`` day always give the same
rows: each tenant draws from its own ``random.Random(f"{seed}:{tenant}")`` (string seeds
are hashed with SHA-512, independent of ``PYTHONHASHSEED``), so a tenant's data does not
depend on which other tenants are generated.

Size: ``locations`` per tenant; every row count is proportional to it (a catalogue of
:data:`CATALOGUE_SIZE` items per tenant is the only fixed part). Per location: a lunch and
a dinner menu drawn from the shared catalogue (so most items are on several menus, some
on one), 10 tables, about 12 reservations a day from 35 days before ``reference`` to 6
days after, and about 12 orders a day over the 35 days up to ``reference`` -- enough for
the 7-day/28-day demand ratio and popularity -- with item demand trending up or down per
item, and a few open orders on ``reference`` for the kitchen display.

Columns kept by triggers (``menu_entries.item_price``, ``order_items.location_id``,
``order_priority``, ``order_status``) are not written: the triggers fill them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from thorbis_cache.postgres import bulk

from thorbis_restaurant.availability import DEFAULT_SLOTS

__all__ = [
    "CATALOGUE_SIZE",
    "CATEGORIES",
    "COLUMNS",
    "TABLES",
    "TABLE_SET",
    "Dataset",
    "generate",
    "load",
    "sql_inserts",
    "tenant_names",
]

#: Tables in foreign-key order (parents first), as loaded.
TABLES = (
    "locations",
    "menu_items",
    "menus",
    "menu_entries",
    "dining_tables",
    "reservations",
    "orders",
    "order_items",
)

COLUMNS: dict[str, tuple[str, ...]] = {
    "locations": ("tenant_id", "id", "name", "city", "created_at"),
    "menu_items": ("tenant_id", "id", "name", "category", "base_price", "cost",
                   "kitchen_station", "prep_minutes", "available", "updated_at"),
    "menus": ("tenant_id", "id", "location_id", "name", "active", "updated_at"),
    "menu_entries": ("tenant_id", "menu_id", "item_id", "position"),
    "dining_tables": ("tenant_id", "id", "location_id", "label", "seats", "active"),
    "reservations": ("tenant_id", "id", "location_id", "table_id", "day", "slot",
                     "party_size", "status", "seated_at", "left_at", "created_at"),
    "orders": ("tenant_id", "id", "location_id", "table_label", "priority", "status",
               "placed_at", "completed_at"),
    "order_items": ("tenant_id", "order_id", "line", "item_id", "quantity", "unit_price",
                    "station", "done"),
}  # fmt: skip

#: The tables as :mod:`thorbis_cache.postgres.bulk` writes them.
TABLE_SET = bulk.TableSet("rest", TABLES, COLUMNS)

Row = tuple[Any, ...]

#: Catalogue items per tenant.
CATALOGUE_SIZE = 30
HISTORY_DAYS = 35
AHEAD_DAYS = 6
TABLES_PER_LOCATION = 10
ORDERS_PER_DAY = 12
RESERVATIONS_PER_DAY = 12
OPEN_ORDERS = 6

_CITIES = ("Austin", "Denver", "Portland", "Raleigh", "Tampa", "Madison", "Boise", "Tucson")
_CATALOGUE = (
    # category, station, (low, high) price in dollars, names
    ("starters", "cold", (6, 14), ("Burrata", "Ceviche", "Caesar Salad", "Beet Salad",
                                   "Tuna Crudo", "Gazpacho")),
    ("starters", "fry", (5, 12), ("Calamari", "Croquetas", "Fries", "Onion Rings")),
    ("mains", "grill", (18, 42), ("Ribeye", "Burger", "Lamb Chops", "Salmon", "Half Chicken",
                                  "Pork Chop")),
    ("mains", "saute", (16, 32), ("Risotto", "Carbonara", "Scallops", "Mussels",
                                  "Gnocchi")),
    ("desserts", "pastry", (7, 13), ("Tiramisu", "Creme Brulee", "Cheesecake", "Sorbet")),
    ("drinks", "bar", (4, 15), ("Lemonade", "Espresso", "Negroni", "IPA", "House Red")),
)
_CENT = decimal.Decimal("0.01")
#: The catalogue's categories, in catalogue order (a menu may list none of one).
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(category for category, *_ in _CATALOGUE))


@attrs.frozen(slots=True)
class Dataset(bulk.GeneratedRows):
    """Generated rows, per table, as tuples in :data:`COLUMNS` order.

    :ivar tenants: the tenant ids, in generation order.
    :ivar reference: the reference day the data is placed around.
    """

    TABLE_SET: ClassVar[bulk.TableSet] = TABLE_SET

    tenants: tuple[str, ...]
    reference: dt.date
    locations: tuple[Row, ...]
    menu_items: tuple[Row, ...]
    menus: tuple[Row, ...]
    menu_entries: tuple[Row, ...]
    dining_tables: tuple[Row, ...]
    reservations: tuple[Row, ...]
    orders: tuple[Row, ...]
    order_items: tuple[Row, ...]


def tenant_names(n: int) -> tuple[str, ...]:
    """``n`` tenant ids: ``rest-001``, ``rest-002``, ..."""
    return tuple(f"rest-{i:03d}" for i in range(1, n + 1))


def _day(when: dt.datetime | dt.date | None) -> dt.date:
    if when is None:
        return dt.datetime.now(dt.UTC).date()
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise ValueError(f"reference must be timezone-aware, got {when!r}")
        return when.astimezone(dt.UTC).date()
    return when


def generate(
    tenants: Sequence[str] | int,
    locations: int = 2,
    *,
    seed: int = 0,
    reference: dt.datetime | dt.date | None = None,
) -> Dataset:
    """Generate the data set.

    :param tenants: tenant ids, or a count (then :func:`tenant_names`).
    :param locations: locations per tenant (the size knob; rows grow linearly with it).
    :param seed: the random seed.
    :param reference: the day the data is placed around (default today, UTC).
    :raises ValueError: ``locations`` < 1, duplicate tenants, or a naive reference.
    """
    names = tenant_names(tenants) if isinstance(tenants, int) else tuple(tenants)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tenant ids in {names!r}")
    if locations < 1:
        raise ValueError(f"locations must be >= 1, got {locations}")
    ref = _day(reference)
    tables: dict[str, list[Row]] = {t: [] for t in TABLES}
    for tenant in names:
        _Tenant(tenant, random.Random(f"{seed}:{tenant}"), ref, locations, tables).build()
    return Dataset(names, ref, **{t: tuple(rows) for t, rows in tables.items()})


def _at(day: dt.date, minutes: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(
        minutes=minutes)


class _Tenant:
    """Generates one tenant's rows into the shared table lists."""

    def __init__(self, tenant: str, rng: random.Random, ref: dt.date, locations: int,
                 tables: dict[str, list[Row]]) -> None:
        self.tenant = tenant
        self.rng = rng
        self.ref = ref
        self.n_locations = locations
        self.tables = tables
        # item id -> (price, station, base weight, trend)
        self.items: dict[int, tuple[decimal.Decimal, str, float, float]] = {}
        self.table_id = 0
        self.reservation_id = 0
        self.order_id = 0

    def build(self) -> None:
        self.catalogue()
        city = self.rng.choice(_CITIES)
        for location_id in range(1, self.n_locations + 1):
            created = _at(self.ref, 0) - dt.timedelta(days=self.rng.randint(400, 1200))
            self.tables["locations"].append(
                (self.tenant, location_id, f"{city} #{location_id}", city, created))
            menu_items = self.menus(location_id)
            tables = self.dining_tables(location_id)
            self.reservations(location_id, tables)
            self.orders(location_id, menu_items, tables)

    def catalogue(self) -> None:
        rng = self.rng
        pool = [(cat, station, prices, name)
                for cat, station, prices, names in _CATALOGUE for name in names]
        updated = _at(self.ref, 0) - dt.timedelta(days=40)
        for item_id, (category, station, (low, high), name) in enumerate(
                pool[:CATALOGUE_SIZE], 1):
            price = (decimal.Decimal(rng.randint(low * 4, high * 4)) / 4).quantize(_CENT)
            cost = (price * decimal.Decimal(rng.uniform(0.25, 0.4))).quantize(_CENT)
            self.items[item_id] = (price, station, rng.uniform(0.5, 3.0), rng.uniform(-0.6, 1.2))
            self.tables["menu_items"].append(
                (self.tenant, item_id, name, category, price, cost, station,
                 rng.choice((5, 8, 10, 12, 15, 20)), True, updated))

    def menus(self, location_id: int) -> list[int]:
        rng = self.rng
        ids = sorted(self.items)
        lunch = sorted(rng.sample(ids, 16))
        dinner = sorted(rng.sample(ids, 22))
        updated = _at(self.ref, 0) - dt.timedelta(days=30)
        for menu_id, name, items in ((2 * location_id - 1, "Lunch", lunch),
                                     (2 * location_id, "Dinner", dinner)):
            self.tables["menus"].append(
                (self.tenant, menu_id, location_id, name, True, updated))
            for position, item_id in enumerate(items, 1):
                self.tables["menu_entries"].append((self.tenant, menu_id, item_id, position))
        return sorted(set(lunch) | set(dinner))

    def dining_tables(self, location_id: int) -> list[tuple[int, str, int]]:
        out = []
        for n in range(1, TABLES_PER_LOCATION + 1):
            self.table_id += 1
            seats = (2, 2, 4, 4, 4, 6)[self.rng.randrange(6)]
            label = f"T{n}"
            self.tables["dining_tables"].append(
                (self.tenant, self.table_id, location_id, label, seats, True))
            out.append((self.table_id, label, seats))
        return out

    def reservations(self, location_id: int, tables: list[tuple[int, str, int]]) -> None:
        rng = self.rng
        for offset in range(-HISTORY_DAYS, AHEAD_DAYS + 1):
            day = self.ref + dt.timedelta(days=offset)
            pairs = rng.sample([(s, t) for s in DEFAULT_SLOTS for t in tables],
                               RESERVATIONS_PER_DAY)
            for slot, (table_id, _, seats) in sorted(pairs):
                self.reservation_id += 1
                hour, minute = map(int, slot.split(":"))
                start = _at(day, hour * 60 + minute)
                seated = left = None
                if offset < 0:
                    status = rng.choices(("completed", "cancelled", "no_show"), (85, 10, 5))[0]
                    if status == "completed":
                        seated = start + dt.timedelta(minutes=rng.randint(0, 15))
                        left = seated + dt.timedelta(minutes=rng.randint(40, 130))
                else:
                    status = rng.choices(("booked", "cancelled"), (90, 10))[0]
                self.tables["reservations"].append(
                    (self.tenant, self.reservation_id, location_id, table_id, day,
                     dt.time(hour, minute), rng.randint(1, seats), status, seated, left,
                     start - dt.timedelta(days=rng.randint(0, 20))))

    def orders(self, location_id: int, items: list[int],
               tables: list[tuple[int, str, int]]) -> None:
        rng = self.rng
        for age in range(HISTORY_DAYS - 1, -1, -1):
            day = self.ref - dt.timedelta(days=age)
            # Trend: an item's weight moves linearly from (1 - t) long ago to 1 + t now.
            weights = [self.items[i][2] * max(0.05, 1 + self.items[i][3] * (1 - 2 * age / 34))
                       for i in items]
            for _ in range(ORDERS_PER_DAY):
                placed = _at(day, rng.randint(11 * 60, 22 * 60))
                status = "cancelled" if rng.random() < 0.04 else "served"
                self.order(location_id, tables, items, weights, placed, status)
        for _ in range(OPEN_ORDERS):
            weights = [self.items[i][2] for i in items]
            placed = _at(self.ref, rng.randint(11 * 60, 22 * 60))
            self.order(location_id, tables, items, weights, placed, "open")

    def order(self, location_id: int, tables: list[tuple[int, str, int]], items: list[int],
              weights: list[float], placed: dt.datetime, status: str) -> None:
        rng = self.rng
        self.order_id += 1
        priority = rng.choices(("normal", "vip", "rush"), (85, 10, 5))[0]
        completed = (placed + dt.timedelta(minutes=rng.randint(20, 90))
                     if status == "served" else None)
        self.tables["orders"].append(
            (self.tenant, self.order_id, location_id, rng.choice(tables)[1], priority, status,
             placed, completed))
        chosen = rng.choices(items, weights, k=rng.randint(1, 4))
        for line, item_id in enumerate(dict.fromkeys(chosen), 1):
            price, station, _, _ = self.items[item_id]
            done = status != "open" or rng.random() < 0.3
            self.tables["order_items"].append(
                (self.tenant, self.order_id, line, item_id, chosen.count(item_id), price,
                 station, done))


async def load(
    conn_or_dsn: Any,
    tenants: Sequence[str] | int,
    locations: int = 2,
    *,
    seed: int = 0,
    reference: dt.datetime | dt.date | None = None,
) -> Dataset:
    """Generate the data set and COPY it into the ``rest`` tables (which must exist), in
    one transaction, then ``ANALYZE``.

    :param conn_or_dsn: a PostgreSQL DSN, an ``asyncpg`` connection, or a pool.
    :returns: the generated data set.
    :raises asyncpg.PostgresError: a row was refused (e.g. the tenant is already loaded).
    """
    data = generate(tenants, locations, seed=seed, reference=reference)
    await bulk.copy_rows(conn_or_dsn, TABLE_SET, data.rows)
    return data


def sql_inserts(data: Dataset) -> list[str]:
    """The data set as plain ``INSERT`` statements, one per non-empty table in
    foreign-key order (for the contract kit's ``seed_sql``)."""
    return bulk.insert_statements(TABLE_SET, data.rows)
