"""A deterministic automotive data set for N tenants: demo, tests and benchmarks.

:func:`generate` builds rows for every ``auto`` table; :func:`load` COPYs them into
PostgreSQL. The same ``seed``, tenants, size and ``reference`` day always give the same
rows: each tenant draws from its own ``random.Random(f"{seed}:{tenant}")`` (string seeds
are hashed with SHA-512, independent of ``PYTHONHASHSEED``), so a tenant's data does not
depend on which other tenants are generated. Sizes grow linearly with ``per_tenant``
(vehicles; parts are as many, repair orders and movements a fixed multiple).

Times are placed before ``reference`` (midnight UTC): each vehicle has a first visit up
to two years back and a visit every 60-200 days since, its odometer growing at its own
rate (15-60 miles a day), so schedules and mileage rates have signal; about 20% of
vehicles have an open repair order. Labor hours carry a season (A/C work runs longer in
summer, battery work in winter) for the seasonal factors to find. Each part's stock
ledger covers 120 days: an opening receipt, daily issues at the part's own rate, a
replenishment arriving one lead time after stock falls under 10, some returns and
count adjustments. ``parts.on_hand`` is written as 0 and set by the ledger trigger.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from thorbis_cache.postgres import bulk

from thorbis_automotive.vin import ALPHABET, CHECK_POSITION, check_digit

__all__ = [
    "COLUMNS", "SERVICE_CATALOGUE", "TABLES", "TABLE_SET", "Dataset", "generate", "load",
    "sql_inserts", "tenant_names",
]

#: Tables in foreign-key order (parents first), as loaded.
TABLES = (
    "service_types", "bays", "technicians", "vehicles", "repair_orders", "parts",
    "stock_movements",
)

COLUMNS: dict[str, tuple[str, ...]] = {
    "service_types": (
        "tenant_id", "code", "name", "interval_miles", "interval_days", "standard_hours",
        "labor_rate",
    ),
    "bays": ("tenant_id", "id", "name", "hours_per_day"),
    "technicians": ("tenant_id", "id", "first_name", "last_name", "active"),
    "vehicles": (
        "tenant_id", "vin", "make", "model", "model_year", "odometer_miles", "created_at",
        "updated_at",
    ),
    "repair_orders": (
        "tenant_id", "id", "vin", "service_type", "status", "bay_id", "technician_id",
        "odometer_miles", "opened_at", "completed_at", "labor_hours", "labor_amount",
        "parts_amount",
    ),
    "parts": (
        "tenant_id", "part_number", "description", "category", "unit_cost", "unit_price",
        "on_hand", "lead_time_days", "service_level_z", "updated_at",
    ),
    "stock_movements": (
        "tenant_id", "id", "part_number", "quantity", "reason", "repair_order_id",
        "moved_at",
    ),
}  # fmt: skip

#: The tables as :mod:`thorbis_cache.postgres.bulk` writes them.
TABLE_SET = bulk.TableSet("auto", TABLES, COLUMNS)

Row = tuple[Any, ...]

#: (code, name, interval miles, interval days, standard hours).
SERVICE_CATALOGUE: tuple[tuple[str, str, int, int, str], ...] = (
    ("oil_change", "Oil and filter change", 5_000, 180, "0.50"),
    ("tire_rotation", "Tire rotation", 7_500, 180, "0.60"),
    ("air_filter", "Engine air filter", 15_000, 365, "0.30"),
    ("brake_service", "Brake pads and rotors", 30_000, 730, "2.00"),
    ("ac_service", "A/C inspection and recharge", 40_000, 730, "1.50"),
    ("battery", "Battery test and replacement", 50_000, 1_460, "0.40"),
    ("coolant_flush", "Coolant flush", 50_000, 1_825, "1.20"),
    ("transmission_fluid", "Transmission fluid service", 60_000, 1_460, "1.50"),
)
#: Seasonal effect on labor time in the generated history: (code, months, multiplier).
_SEASONS = (("ac_service", (5, 6, 7, 8), 1.35), ("battery", (12, 1, 2), 1.25))
_WMIS = (
    ("1HG", "Honda", ("Civic", "Accord", "CR-V")),
    ("1FT", "Ford", ("F-150", "Ranger")),
    ("2T1", "Toyota", ("Corolla", "Matrix")),
    ("3VW", "Volkswagen", ("Jetta", "Golf")),
    ("5YJ", "Tesla", ("Model 3", "Model Y")),
    ("JTD", "Toyota", ("Prius", "Yaris")),
    ("WVW", "Volkswagen", ("Passat", "Polo")),
    ("KMH", "Hyundai", ("Elantra", "Sonata")),
)
#: Model-year codes of position 10 from 2001 (I, O, Q, U, Z and 0 are never used).
_YEAR_CODES = "123456789ABCDEFGHJKLMNPRSTVWXY"
_CATEGORIES = ("filters", "brakes", "fluids", "electrical", "tires", "belts")
_FIRST = ("Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jon")
_LAST = ("Adams", "Baker", "Chen", "Diaz", "Evans", "Garcia", "Ito", "Khan", "Lopez", "Patel")
_Z = ("1.28", "1.65", "2.05")
_LEDGER_DAYS = 120
_CENT = decimal.Decimal("0.01")


@attrs.frozen(slots=True)
class Dataset(bulk.GeneratedRows):
    """Generated rows, per table, as tuples in :data:`COLUMNS` order.

    :ivar tenants: the tenant ids, in generation order.
    :ivar reference: the reference time (midnight UTC); every row is before it.
    """

    TABLE_SET: ClassVar[bulk.TableSet] = TABLE_SET

    tenants: tuple[str, ...]
    reference: dt.datetime
    tables: dict[str, tuple[Row, ...]]

    def rows(self, table: str) -> tuple[Row, ...]:
        """The rows of ``table`` (one of :data:`TABLES`)."""
        if table not in COLUMNS:
            raise KeyError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        return self.tables[table]

    def on_hand(self) -> dict[tuple[str, str], int]:
        """(tenant, part number) -> stock after the ledger trigger applied every movement."""
        out = {(r["tenant_id"], r["part_number"]): 0 for r in self.records("parts")}
        for m in self.records("stock_movements"):
            out[(m["tenant_id"], m["part_number"])] += m["quantity"]
        return out


def tenant_names(n: int) -> tuple[str, ...]:
    """``n`` tenant ids: ``auto-001``, ``auto-002``, ..."""
    return tuple(f"auto-{i:03d}" for i in range(1, n + 1))


def make_vin(rng: random.Random, wmi: str, year: int, serial: int) -> str:
    """A VIN with a valid check digit: WMI, 5 random characters, check digit, model-year
    code, plant, 6-digit serial."""
    vds = "".join(rng.choice(ALPHABET) for _ in range(5))
    year_code = _YEAR_CODES[(year - 2001) % len(_YEAR_CODES)]
    draft = f"{wmi}{vds}0{year_code}{rng.choice(ALPHABET)}{serial % 1_000_000:06d}"
    return draft[:CHECK_POSITION] + check_digit(draft) + draft[CHECK_POSITION + 1:]


def generate(
    tenants: Sequence[str] | int,
    per_tenant: int = 40,
    *,
    seed: int = 0,
    reference: dt.datetime | dt.date | None = None,
) -> Dataset:
    """Generate the data set.

    :param tenants: tenant ids, or a count (then :func:`tenant_names`).
    :param per_tenant: vehicles per tenant (and parts); everything else scales with it.
    :param seed: the random seed.
    :param reference: the day the data ends at (midnight UTC of it); default today.
    :raises ValueError: ``per_tenant`` < 1, duplicate tenants, or a naive reference.
    """
    names = tenant_names(tenants) if isinstance(tenants, int) else tuple(tenants)
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tenant ids in {names!r}")
    if per_tenant < 1:
        raise ValueError(f"per_tenant must be >= 1, got {per_tenant}")
    ref = bulk.midnight_utc(reference)
    tables: dict[str, list[Row]] = {t: [] for t in TABLES}
    for tenant in names:
        _Tenant(tenant, random.Random(f"{seed}:{tenant}"), ref, per_tenant, tables).build()
    return Dataset(names, ref, {t: tuple(rows) for t, rows in tables.items()})


class _Tenant:
    """Generates one tenant's rows into the shared table lists."""

    def __init__(self, tenant: str, rng: random.Random, ref: dt.datetime, size: int,
                 tables: dict[str, list[Row]]) -> None:
        self.tenant = tenant
        self.rng = rng
        self.ref = ref
        self.size = size
        self.tables = tables
        self.repair_order_id = 0
        self.movement_id = 0
        self.rate = decimal.Decimal(rng.randint(95, 165))

    def add(self, table: str, *row: Any) -> None:
        self.tables[table].append((self.tenant, *row))

    def build(self) -> None:
        rng = self.rng
        for code, name, miles, days, hours in SERVICE_CATALOGUE:
            self.add("service_types", code, name, miles, days, decimal.Decimal(hours), self.rate)
        bays = max(2, self.size // 15)
        for bay in range(1, bays + 1):
            self.add("bays", bay, f"Bay {bay}", decimal.Decimal(rng.choice(("8.0", "10.0"))))
        techs = max(2, self.size // 10)
        for tech in range(1, techs + 1):
            self.add("technicians", tech, rng.choice(_FIRST), rng.choice(_LAST), True)
        for serial in range(1, self.size + 1):
            self.vehicle(serial, bays, techs)
        for n in range(1, self.size + 1):
            self.part(n)

    def vehicle(self, serial: int, bays: int, techs: int) -> None:
        rng, ref = self.rng, self.ref
        wmi, make, models = rng.choice(_WMIS)
        year = rng.randint(2005, min(2024, ref.year))
        vin = make_vin(rng, wmi, year, serial)
        per_day = rng.uniform(15, 60)
        first = ref - dt.timedelta(days=rng.randint(200, 730))
        age_days = max(30, (first.date() - dt.date(year, 1, 1)).days)
        odometer0 = max(500, int(age_days * per_day * rng.uniform(0.8, 1.2)))
        day, odometer, last_done = first, odometer0, first
        while day < ref - dt.timedelta(days=1):
            odometer = odometer0 + int((day - first).days * per_day) + rng.randint(0, 50)
            code = "oil_change" if rng.random() < 0.5 else rng.choice(SERVICE_CATALOGUE)[0]
            completed = day + dt.timedelta(hours=rng.randint(9, 17), minutes=rng.randint(0, 59))
            completed = min(completed, ref - dt.timedelta(minutes=1))
            self.repair_order(vin, code, "completed", odometer, completed, bays, techs)
            last_done = completed
            day += dt.timedelta(days=rng.randint(60, 200))
        self.add("vehicles", vin, make, rng.choice(models), year, odometer,
                 first - dt.timedelta(days=1), last_done)
        if rng.random() < 0.2:
            opened = ref - dt.timedelta(hours=rng.randint(1, 48))
            self.repair_order(vin, rng.choice(SERVICE_CATALOGUE)[0],
                              rng.choice(("open", "in_progress")), odometer + rng.randint(0, 300),
                              opened, bays, techs)

    def repair_order(self, vin: str, code: str, status: str, odometer: int,
                     when: dt.datetime, bays: int, techs: int) -> None:
        rng = self.rng
        self.repair_order_id += 1
        completed = when if status == "completed" else None
        opened = when - dt.timedelta(hours=rng.randint(1, 6)) if completed else when
        hours = labor = None
        parts_amount = decimal.Decimal("0.00")
        if completed is not None:
            standard = float(next(h for c, _, _, _, h in SERVICE_CATALOGUE if c == code))
            season = next((m for c, months, m in _SEASONS
                           if c == code and completed.month in months), 1.0)
            hours = decimal.Decimal(str(round(standard * season * rng.uniform(0.8, 1.25), 2)))
            labor = (hours * self.rate).quantize(_CENT)
            parts_amount = (decimal.Decimal(rng.randint(0, 40_000)) / 100).quantize(_CENT)
        self.add("repair_orders", self.repair_order_id, vin, code, status,
                 rng.randint(1, bays), rng.randint(1, techs), odometer, opened, completed,
                 hours, labor or decimal.Decimal("0.00"), parts_amount)

    def part(self, n: int) -> None:
        rng, ref = self.rng, self.ref
        category = rng.choice(_CATEGORIES)
        number = f"{category[:3].upper()}-{n:05d}"
        cost = (decimal.Decimal(rng.randint(500, 30_000)) / 100).quantize(_CENT)
        lead = rng.randint(1, 14)
        self.add("parts", number, f"{category} part {n}", category, cost,
                 (cost * decimal.Decimal("1.4")).quantize(_CENT), 0, lead,
                 decimal.Decimal(rng.choice(_Z)), ref)
        start = ref - dt.timedelta(days=_LEDGER_DAYS)
        stock = rng.randint(20, 80)
        self.movement(number, stock, "receipt", start + dt.timedelta(hours=7))
        per_day = rng.uniform(0, 2.5)
        arriving: dict[int, int] = {}
        for d in range(_LEDGER_DAYS):
            day = start + dt.timedelta(days=d)
            if d in arriving:
                qty = arriving.pop(d)
                stock += qty
                self.movement(number, qty, "receipt", day + dt.timedelta(hours=8))
            for _ in range(5):
                if rng.random() < per_day / 5:
                    qty = rng.randint(1, 2)
                    if qty <= stock:
                        stock -= qty
                        self.movement(number, -qty, "issue",
                                      day + dt.timedelta(hours=rng.randint(9, 17)))
            roll = rng.random()
            if roll < 0.01:
                stock += 1
                self.movement(number, 1, "return", day + dt.timedelta(hours=18))
            elif roll < 0.015 and stock > 0:
                stock -= 1
                self.movement(number, -1, "adjustment", day + dt.timedelta(hours=19))
            if stock < 10 and not arriving and d + lead < _LEDGER_DAYS:
                arriving[d + lead] = rng.randint(20, 60)

    def movement(self, number: str, qty: int, reason: str, when: dt.datetime) -> None:
        self.movement_id += 1
        self.add("stock_movements", self.movement_id, number, qty, reason, None, when)


async def load(
    conn_or_dsn: Any,
    tenants: Sequence[str] | int,
    per_tenant: int = 40,
    *,
    seed: int = 0,
    reference: dt.datetime | dt.date | None = None,
) -> Dataset:
    """Generate the data set and COPY it into the ``auto`` tables (which must exist).

    One transaction: either every row is in, or none; then ``ANALYZE``.

    :param conn_or_dsn: a PostgreSQL DSN, an ``asyncpg`` connection, or a pool.
    :returns: the generated data set.
    :raises asyncpg.PostgresError: a row was refused (e.g. the tenant is already loaded).
    """
    data = generate(tenants, per_tenant, seed=seed, reference=reference)
    await bulk.copy_rows(conn_or_dsn, TABLE_SET, data.rows)
    return data


def sql_inserts(data: Dataset) -> list[str]:
    """The data set as plain ``INSERT`` statements, one per non-empty table in
    foreign-key order (the contract kit's ``seed_sql``)."""
    return bulk.insert_statements(TABLE_SET, data.rows)
