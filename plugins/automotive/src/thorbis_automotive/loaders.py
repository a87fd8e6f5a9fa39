"""Loads the vertical's records from PostgreSQL: the read-through loaders of every key
schema, and the batched reads of the warmers.

Every function takes ``fetch``: ``async (sql, *args) -> list of row mappings`` (the shape
of :attr:`thorbis_cache.plugins.declarations.WarmContext.fetch`; ``pool.fetch`` or
``conn.fetch`` of asyncpg). Derived fields are computed here by the formulas of
:mod:`~thorbis_automotive.maintenance`, :mod:`~thorbis_automotive.inventory` and
:mod:`~thorbis_automotive.labor`, so a record is the same whoever loads it.

**One key, one loader**, shaped for the cache's read-through of the key's kind:

==============================  ===============================  ============================
schema (kind)                   loader                           returns
==============================  ===============================  ============================
``auto.vehicle_history`` (v)    :func:`vehicle_history`          the record, or MissingRow
``auto.make_model`` (zset)      :func:`make_model_set`           {VIN: model year}, whole
``auto.part`` (hash)            :func:`part`                     the entity, or MissingRow
``auto.parts_by_stock`` (zset)  :func:`parts_by_stock`           {part number: on hand}
``auto.parts_reorder_margin``   :func:`parts_reorder_margin`     {part number: margin}
``auto.service_type`` (v)       :func:`service_type`             the record, or MissingRow
``auto.part_demand`` (v)        :func:`part_demand`              the record (weeks may be [])
``auto.labor_seasonality`` (v)  :func:`labor_seasonality`        the record (jobs may be 0)
``auto.bay_board`` (v)          :func:`bay_board`                the record (bays may be [])
==============================  ===============================  ============================

::

    history = await cache.get_or_load(
        vehicle_history_key(tenant, vin),
        lambda: loaders.vehicle_history(pool.fetch, tenant, vin),
    )
    part = await cache.hash(PART.key(tenant, part_number=n)).get_or_load(
        lambda: loaders.part(pool.fetch, tenant, n))
    low = await cache.zset(PARTS_REORDER_MARGIN.key(tenant)).range_by_score(
        "-inf", 0, count=20, loader=lambda: loaders.parts_reorder_margin(pool.fetch, tenant))

A sorted set's loader returns the whole set (an empty one is cached as empty); an
entity's raises :class:`~thorbis_cache.errors.MissingRow` when its row does not exist
(cached as absent for the schema's ``negative_ttl``). The view mirrors' loaders read the
view only: a part without issues, a type without history, a day without work are facts
worth caching, not missing rows.

Queries live in ``sql/q_*.sql``; every one is scoped to one tenant, and each function
costs a fixed number of queries whatever the number of records.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins import declarations

from thorbis_automotive import inventory, labor
from thorbis_automotive.maintenance import Reading, maintenance_schedule
from thorbis_automotive.models import (
    BayBoard,
    BayDay,
    LaborSeasonality,
    Part,
    PartDemand,
    ServiceRecord,
    ServiceType,
    Vehicle,
    VehicleHistory,
    WeekDemand,
)
from thorbis_automotive.schemas import vehicle_history_key
from thorbis_automotive.sqlfiles import query
from thorbis_automotive.vin import CheckDigitRule

__all__ = [
    "MAX_MAKE_MODELS",
    "MAX_PARTS",
    "Fetch",
    "MissingRow",
    "all_parts",
    "bay_board",
    "labor_seasonalities",
    "labor_seasonality",
    "make_model_pairs",
    "make_model_set",
    "make_model_sets",
    "part",
    "part_demand",
    "part_numbers",
    "parts",
    "parts_by_stock",
    "parts_reorder_margin",
    "recent_vins",
    "service_type",
    "service_type_codes",
    "service_types",
    "stock_scores",
    "utc_today",
    "vehicle_histories",
    "vehicle_history",
]

#: ``async (sql, *args) -> rows``: how loaders reach the database.
Fetch = declarations.Fetch

#: Most parts a full load (warmer, stock sets) reads per tenant.
MAX_PARTS = 20_000
#: Most make/model sets the vehicles warmer fills per tenant.
MAX_MAKE_MODELS = 5_000


def utc_today() -> dt.date:
    """Today in UTC: the default end (excluded) of the demand window."""
    return dt.datetime.now(dt.UTC).date()


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# --------------------------------------------------------------------------- vehicles


def _service_type(row: Mapping[str, Any]) -> ServiceType:
    return ServiceType(row["code"], row["name"], row["interval_miles"], row["interval_days"],
                       float(row["standard_hours"]), row["labor_rate"])


async def service_types(
    fetch: Fetch, tenant: str, codes: Iterable[str] | None = None
) -> list[ServiceType]:
    """The service types of ``tenant`` with these codes (all when None; unknown codes
    are skipped), by code. One query."""
    if codes is None:
        rows = await fetch(query("q_service_types"), tenant)
    else:
        rows = await fetch(query("q_service_types_by_code"), tenant, list(codes))
    return [_service_type(r) for r in rows]


async def service_type(fetch: Fetch, tenant: str, code: str) -> ServiceType:
    """One service type (the loader of ``auto.service_type``).

    :raises MissingRow: no such service type.
    """
    found = await service_types(fetch, tenant, [code])
    return MissingRow.first(found, "auto.service_types", tenant, code)


async def service_type_codes(fetch: Fetch, tenant: str) -> list[str]:
    """Every service type code of ``tenant`` (ids only, for warmers)."""
    return [r["code"] for r in await fetch(query("q_service_type_codes"), tenant)]


def _vehicle(row: Mapping[str, Any]) -> Vehicle:
    return Vehicle(row["vin"], row["make"], row["model"], row["model_year"],
                   row["odometer_miles"], row["created_at"], row["updated_at"])


async def vehicle_histories(
    fetch: Fetch, tenant: str, vins: Iterable[str]
) -> list[VehicleHistory]:
    """Histories with schedules of these vehicles (unknown VINs are skipped), by VIN.
    Three queries whatever the number of VINs.

    The schedule's readings are the completed services and the vehicle's current
    odometer dated by its last update (see :mod:`thorbis_automotive.maintenance`).
    """
    wanted = list(vins)
    vehicles = [_vehicle(r) for r in await fetch(query("q_vehicles"), tenant, wanted)]
    if not vehicles:
        return []
    found = [v.vin for v in vehicles]
    services: dict[str, list[ServiceRecord]] = defaultdict(list)
    for r in await fetch(query("q_vehicle_services"), tenant, found):
        services[r["vin"]].append(ServiceRecord(
            r["repair_order_id"], r["service_type"], r["completed_on"], r["odometer_miles"],
            float(r["labor_hours"]), r["total_amount"],
        ))
    types = await service_types(fetch, tenant)
    out = []
    for vehicle in vehicles:
        history = services.get(vehicle.vin, [])
        readings: list[Reading] = [
            (s.completed_on, s.odometer_miles, s.service_type) for s in history
        ]
        if history:
            # The current odometer counts only once the vehicle has been serviced:
            # a bare registration is no evidence of how the car is driven.
            readings.append(
                (vehicle.updated_at.astimezone(dt.UTC).date(), vehicle.odometer_miles, None)
            )
        rate, schedule = maintenance_schedule(readings, types)
        out.append(VehicleHistory(vehicle, history, rate, schedule))
    return out


async def vehicle_history(
    fetch: Fetch, tenant: str, vin: str, *, rule: CheckDigitRule = CheckDigitRule.NORTH_AMERICA
) -> VehicleHistory:
    """One vehicle's history and schedule.

    :raises InvalidVinError: ``vin`` is not a valid VIN (naming ``auto.vehicle_history``).
    :raises MissingRow: no such vehicle.
    """
    # The schema checks the VIN (the key this loader fills is the one it names).
    clean = str(vehicle_history_key(tenant, vin, rule=rule).params["vin"])
    found = await vehicle_histories(fetch, tenant, [clean])
    return MissingRow.first(found, "auto.vehicles", tenant, clean)


async def recent_vins(fetch: Fetch, tenant: str, since: dt.datetime, limit: int) -> list[str]:
    """VINs with a repair order completed since ``since``, most recent first."""
    return [r["vin"] for r in await fetch(query("q_recent_vehicles"), tenant, since, limit)]


async def make_model_pairs(
    fetch: Fetch, tenant: str, limit: int = MAX_MAKE_MODELS
) -> list[tuple[str, str]]:
    """The distinct ``(make, model)`` pairs of ``tenant``'s vehicles, at most ``limit``
    (ids only, for warmers)."""
    return [(r["make"], r["model"])
            for r in await fetch(query("q_make_model_pairs"), tenant, limit)]


async def make_model_sets(
    fetch: Fetch, tenant: str, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, float]]:
    """Whole make/model sets: ``(make, model)`` -> {VIN: model year}, for each of
    ``pairs`` (a pair without vehicles maps to an empty set). One query."""
    wanted = list(dict.fromkeys(pairs))
    sets: dict[tuple[str, str], dict[str, float]] = {pair: {} for pair in wanted}
    if not wanted:
        return sets
    rows = await fetch(query("q_make_model_sets"), tenant,
                       [make for make, _ in wanted], [model for _, model in wanted])
    for r in rows:
        sets[(r["make"], r["model"])][r["vin"]] = float(r["model_year"])
    return sets


async def make_model_set(fetch: Fetch, tenant: str, make: str, model: str) -> dict[str, float]:
    """One whole make/model set, {VIN: model year} (the loader of ``auto.make_model``;
    empty when no vehicle is of that make and model)."""
    rows = await fetch(query("q_make_model"), tenant, make, model)
    return {r["vin"]: float(r["model_year"]) for r in rows}


# --------------------------------------------------------------------------- parts


async def _with_demand(
    fetch: Fetch, tenant: str, rows: Sequence[Mapping[str, Any]], as_of: dt.date
) -> list[Part]:
    if not rows:
        return []
    numbers = [r["part_number"] for r in rows]
    window = inventory.DEMAND_WINDOW_DAYS
    issues = await fetch(
        query("q_part_issues"), tenant, numbers,
        _midnight(as_of - dt.timedelta(days=window)), _midnight(as_of),
    )
    stats = inventory.stats_by_part(
        ((r["part_number"], r["day"], int(r["units"])) for r in issues), numbers, as_of, window
    )
    out = []
    for r in rows:
        s = stats[r["part_number"]]
        lead, z = r["lead_time_days"], float(r["service_level_z"])
        out.append(Part(
            r["part_number"], r["description"], r["category"], r["unit_cost"],
            r["unit_price"], r["on_hand"], lead, z, s.mean, s.std,
            inventory.safety_stock(s, lead, z), inventory.reorder_point(s, lead, z),
            7 * s.mean, as_of, r["updated_at"],
        ))
    return out


async def parts(
    fetch: Fetch, tenant: str, part_numbers: Iterable[str], *, as_of: dt.date | None = None
) -> list[Part]:
    """These parts (absent ones skipped), by part number, with demand statistics and
    reorder points over the window ending at ``as_of`` (default today, UTC). Two queries."""
    rows = await fetch(query("q_parts"), tenant, list(part_numbers))
    return await _with_demand(fetch, tenant, rows, as_of or utc_today())


async def part(
    fetch: Fetch, tenant: str, part_number: str, *, as_of: dt.date | None = None
) -> Part:
    """One part (the loader of ``auto.part``).

    :raises MissingRow: no such part.
    """
    found = await parts(fetch, tenant, [part_number], as_of=as_of)
    return MissingRow.first(found, "auto.parts", tenant, part_number)


async def part_numbers(fetch: Fetch, tenant: str, limit: int = MAX_PARTS) -> list[str]:
    """The part numbers of ``tenant``, at most ``limit`` (ids only, for warmers)."""
    return [r["part_number"] for r in await fetch(query("q_part_numbers"), tenant, limit)]


async def all_parts(
    fetch: Fetch, tenant: str, *, as_of: dt.date | None = None, limit: int = MAX_PARTS
) -> list[Part]:
    """Every part of ``tenant`` (at most ``limit``), by part number. Two queries."""
    rows = await fetch(query("q_all_parts"), tenant, limit)
    return await _with_demand(fetch, tenant, rows, as_of or utc_today())


def stock_scores(parts: Iterable[Part]) -> tuple[dict[str, float], dict[str, float]]:
    """The two stock sets of ``parts``: part number -> on hand, and part number ->
    on hand - reorder point (<= 0: at or below the reorder point)."""
    by_stock: dict[str, float] = {}
    margin: dict[str, float] = {}
    for p in parts:
        by_stock[p.part_number] = float(p.on_hand)
        margin[p.part_number] = float(p.on_hand - p.reorder_point)
    return by_stock, margin


async def parts_by_stock(fetch: Fetch, tenant: str, limit: int = MAX_PARTS) -> dict[str, float]:
    """The whole by-stock set, part number -> on hand (the loader of
    ``auto.parts_by_stock``). One query, on the stock column only."""
    rows = await fetch(query("q_parts_on_hand"), tenant, limit)
    return {r["part_number"]: float(r["on_hand"]) for r in rows}


async def parts_reorder_margin(
    fetch: Fetch, tenant: str, *, as_of: dt.date | None = None, limit: int = MAX_PARTS
) -> dict[str, float]:
    """The whole reorder-margin set, part number -> on hand - reorder point (the loader
    of ``auto.parts_reorder_margin``): every part's reorder point needs its demand, so
    two queries, as :func:`all_parts`."""
    _, margin = stock_scores(await all_parts(fetch, tenant, as_of=as_of, limit=limit))
    return margin


async def part_demand(fetch: Fetch, tenant: str, part_number: str) -> PartDemand:
    """A part's weekly demand from ``auto.parts_demand_weekly`` (the loader of
    ``auto.part_demand``; empty weeks absent: a part without issues has no weeks -- a
    fact worth caching, not a missing row)."""
    rows = await fetch(query("q_part_demand"), tenant, part_number)
    return PartDemand(
        part_number, [WeekDemand(r["week_start"], r["issued"], r["movements"]) for r in rows]
    )


# --------------------------------------------------------------------------- labor and bays


async def labor_seasonalities(
    fetch: Fetch, tenant: str, codes: Iterable[str]
) -> list[LaborSeasonality]:
    """Monthly labor history and seasonal factors of these service types, from
    ``auto.labor_monthly`` alone, in the order given (a code without history has no
    jobs and every factor 1). One query."""
    wanted = list(dict.fromkeys(codes))
    if not wanted:
        return []
    monthly: dict[str, dict[int, tuple[int, float]]] = defaultdict(dict)
    for r in await fetch(query("q_labor_monthly"), tenant, wanted):
        monthly[r["service_type"]][r["month"]] = (int(r["jobs"]), float(r["labor_hours"]))
    out = []
    for code in wanted:
        months = monthly.get(code, {})
        jobs = sum(n for n, _ in months.values())
        hours = sum(h for _, h in months.values())
        out.append(LaborSeasonality(code, jobs, hours / jobs if jobs else None,
                                    labor.seasonal_factors(months)))
    return out


async def labor_seasonality(fetch: Fetch, tenant: str, code: str) -> LaborSeasonality:
    """One service type's seasonality (the loader of ``auto.labor_seasonality``). It
    reads the view only, so it never raises :class:`MissingRow`: whether the type
    exists is :func:`service_type`'s question, answered from the table."""
    return (await labor_seasonalities(fetch, tenant, [code]))[0]


async def bay_board(fetch: Fetch, tenant: str, day: dt.date) -> BayBoard:
    """Every bay's row of ``auto.bay_utilisation_daily`` for ``day`` (the loader of
    ``auto.bay_board``; a day without completed work has no rows: an empty board,
    cached like any other)."""
    rows = await fetch(query("q_bay_board"), tenant, day)
    return BayBoard(day, [
        BayDay(r["bay_id"], r["bay_name"], r["repair_orders"], r["labor_hours"],
               r["capacity_hours"], r["utilisation"])
        for r in rows
    ])
