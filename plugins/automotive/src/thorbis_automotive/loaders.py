"""Loads the vertical's records from PostgreSQL, for warmers, host loaders and the demo.

Every function takes ``fetch``: ``async (sql, *args) -> list of row mappings`` (the shape
of :attr:`thorbis_cache.declarations.WarmContext.fetch`; ``pool.fetch`` or
``conn.fetch`` of asyncpg). Derived fields are computed here by the formulas of
:mod:`~thorbis_automotive.maintenance`, :mod:`~thorbis_automotive.inventory` and
:mod:`~thorbis_automotive.labor`, so a record is the same whoever loads it::

    history = await cache.get_or_load(
        vehicle_history_key(tenant, vin),
        lambda: loaders.vehicle_history(pool.fetch, tenant, vin),
    )

Queries live in ``sql/q_*.sql``; every one is scoped to one tenant, and each function
costs a fixed number of queries whatever the number of records.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from thorbis_cache import declarations
from thorbis_cache.errors import MissingRow

from thorbis_automotive import inventory, labor
from thorbis_automotive.maintenance import Reading, maintenance_schedule
from thorbis_automotive.models import (
    BayBoard,
    BayDay,
    LaborEstimate,
    Part,
    PartDemand,
    ServiceRecord,
    ServiceType,
    Vehicle,
    VehicleHistory,
    WeekDemand,
)
from thorbis_automotive.schemas import VEHICLE_HISTORY
from thorbis_automotive.sqlfiles import query
from thorbis_automotive.vin import CheckDigitRule, validate_vin

__all__ = [
    "Fetch",
    "MissingRow",
    "all_parts",
    "bay_board",
    "labor_estimate",
    "labor_estimates",
    "make_model_set",
    "make_model_sets",
    "part",
    "part_demand",
    "parts",
    "recent_vins",
    "service_types",
    "utc_today",
    "vehicle_histories",
    "vehicle_history",
]

#: ``async (sql, *args) -> rows``: how loaders reach the database.
Fetch = declarations.Fetch

#: Most parts a full load (warmer, stock sets) reads per tenant.
MAX_PARTS = 20_000


def utc_today() -> dt.date:
    """Today in UTC: the default end (excluded) of the demand window."""
    return dt.datetime.now(dt.UTC).date()


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


# --------------------------------------------------------------------------- vehicles


async def service_types(fetch: Fetch, tenant: str) -> list[ServiceType]:
    """Every service type of ``tenant``, by code."""
    return [
        ServiceType(r["code"], r["name"], r["interval_miles"], r["interval_days"],
                    float(r["standard_hours"]), r["labor_rate"])
        for r in await fetch(query("q_service_types"), tenant)
    ]


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
    clean = validate_vin(vin, schema=VEHICLE_HISTORY.name, parameter="vin", rule=rule)
    found = await vehicle_histories(fetch, tenant, [clean])
    if not found:
        raise MissingRow("auto.vehicles", tenant, clean)
    return found[0]


async def recent_vins(fetch: Fetch, tenant: str, since: dt.datetime, limit: int) -> list[str]:
    """VINs with a repair order completed since ``since``, most recent first."""
    return [r["vin"] for r in await fetch(query("q_recent_vehicles"), tenant, since, limit)]


async def make_model_sets(
    fetch: Fetch, tenant: str, limit: int = 100_000
) -> dict[tuple[str, str], dict[str, float]]:
    """Every make/model set: ``(make, model)`` -> {VIN: model year}."""
    sets: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in await fetch(query("q_make_models"), tenant, limit):
        sets[(r["make"], r["model"])][r["vin"]] = float(r["model_year"])
    return dict(sets)


async def make_model_set(fetch: Fetch, tenant: str, make: str, model: str) -> dict[str, float]:
    """One make/model set: {VIN: model year}."""
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
    """One part.

    :raises MissingRow: no such part.
    """
    found = await parts(fetch, tenant, [part_number], as_of=as_of)
    if not found:
        raise MissingRow("auto.parts", tenant, part_number)
    return found[0]


async def all_parts(
    fetch: Fetch, tenant: str, *, as_of: dt.date | None = None, limit: int = MAX_PARTS
) -> list[Part]:
    """Every part of ``tenant`` (at most ``limit``), by part number. Two queries."""
    rows = await fetch(query("q_all_parts"), tenant, limit)
    return await _with_demand(fetch, tenant, rows, as_of or utc_today())


async def part_demand(fetch: Fetch, tenant: str, part_number: str) -> PartDemand:
    """A part's weekly demand from ``auto.parts_demand_weekly`` (empty weeks absent; a
    part without issues has no weeks -- a fact worth caching, not a missing row)."""
    rows = await fetch(query("q_part_demand"), tenant, part_number)
    return PartDemand(
        part_number, [WeekDemand(r["week_start"], r["issued"], r["movements"]) for r in rows]
    )


# --------------------------------------------------------------------------- labor and bays


async def labor_estimates(
    fetch: Fetch, tenant: str, codes: Iterable[str] | None = None
) -> list[LaborEstimate]:
    """Labor estimates with seasonal factors of these service types (all when None),
    by code. Two queries."""
    types = await service_types(fetch, tenant)
    if codes is not None:
        wanted = set(codes)
        types = [t for t in types if t.code in wanted]
    if not types:
        return []
    monthly: dict[str, dict[int, tuple[int, float]]] = defaultdict(dict)
    for r in await fetch(query("q_labor_monthly"), tenant, [t.code for t in types]):
        monthly[r["service_type"]][r["month"]] = (int(r["jobs"]), float(r["labor_hours"]))
    out = []
    for t in types:
        months = monthly.get(t.code, {})
        jobs = sum(n for n, _ in months.values())
        hours = sum(h for _, h in months.values())
        out.append(LaborEstimate(
            t.code, t.name, t.standard_hours, t.labor_rate, jobs,
            hours / jobs if jobs else None, labor.seasonal_factors(months),
        ))
    return out


async def labor_estimate(fetch: Fetch, tenant: str, code: str) -> LaborEstimate:
    """One service type's labor estimate.

    :raises MissingRow: no such service type.
    """
    found = await labor_estimates(fetch, tenant, [code])
    if not found:
        raise MissingRow("auto.service_types", tenant, code)
    return found[0]


async def bay_board(fetch: Fetch, tenant: str, day: dt.date) -> BayBoard:
    """Every bay's row of ``auto.bay_utilisation_daily`` for ``day`` (a day without
    completed work has no rows: an empty board, cached like any other)."""
    rows = await fetch(query("q_bay_board"), tenant, day)
    return BayBoard(day, [
        BayDay(r["bay_id"], r["bay_name"], r["repair_orders"], r["labor_hours"],
               r["capacity_hours"], r["utilisation"])
        for r in rows
    ])
