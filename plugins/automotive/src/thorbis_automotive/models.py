"""The values the automotive vertical caches: enums of the domain and frozen attrs
records, one per cached shape.

Records are plain data (no validators): the cache's codec writes them through cattrs,
and the contract kit builds arbitrary instances from the field types. Derived fields
(the maintenance schedule, reorder points, seasonal factors) are computed by the
formulas of :mod:`~thorbis_automotive.maintenance`, :mod:`~thorbis_automotive.inventory`
and :mod:`~thorbis_automotive.labor` when a record is loaded, never stored as constants.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum

import attrs

__all__ = [
    "BayBoard",
    "BayDay",
    "LaborQuote",
    "LaborSeasonality",
    "LowStockPart",
    "MovementReason",
    "Part",
    "PartDemand",
    "RepairOrderStatus",
    "ScheduledService",
    "ServiceRecord",
    "ServiceType",
    "Vehicle",
    "VehicleHistory",
    "WeekDemand",
]


class RepairOrderStatus(enum.Enum):
    """Life cycle of a repair order."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class MovementReason(enum.Enum):
    """Why stock moved; only ``issue`` (to a job) is demand."""

    RECEIPT = "receipt"  #: delivered by a supplier (quantity > 0)
    ISSUE = "issue"  #: taken for a job (quantity < 0)
    RETURN = "return"  #: brought back unused from a job (quantity > 0)
    ADJUSTMENT = "adjustment"  #: stock count correction (either sign)


# --------------------------------------------------------------------------- vehicles


@attrs.frozen(slots=True)
class Vehicle:
    """A vehicle row (``auto.vehicles``)."""

    vin: str
    make: str
    model: str
    model_year: int
    odometer_miles: int
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen(slots=True)
class ServiceType:
    """A service a shop performs, with its maintenance interval and book labor time
    (``auto.service_types``; cached as ``auto.service_type``)."""

    code: str
    name: str
    interval_miles: int
    interval_days: int
    standard_hours: float
    labor_rate: decimal.Decimal


@attrs.frozen(slots=True)
class ServiceRecord:
    """One completed repair order in a vehicle's history."""

    repair_order_id: int
    service_type: str
    completed_on: dt.date
    odometer_miles: int
    labor_hours: float
    total_amount: decimal.Decimal


@attrs.frozen(slots=True)
class ScheduledService:
    """When a service type is next due for a vehicle
    (:func:`thorbis_automotive.maintenance.maintenance_schedule`).

    :ivar last_done_on: the last completion of this type, None if never done here.
    :ivar due_miles: the odometer reading it is due at.
    :ivar due_by_time: the anchor date + the interval in days.
    :ivar due_by_mileage: the date the vehicle is expected to reach ``due_miles`` at its
        observed mileage rate (None without a rate).
    :ivar due_on: the earlier of the two dates.
    """

    service_type: str
    name: str
    last_done_on: dt.date | None
    due_miles: int
    due_by_time: dt.date
    due_by_mileage: dt.date | None
    due_on: dt.date


@attrs.frozen(slots=True)
class VehicleHistory:
    """A vehicle's service history with its maintenance schedule
    (``auto.vehicle_history``), the seed's ``enrichedHistory`` without fabricated fields.

    :ivar services: completed repair orders, oldest first.
    :ivar miles_per_day: the observed mileage rate (None with fewer than two readings
        on different days).
    :ivar schedule: every service type of the shop, soonest due first.
    """

    vehicle: Vehicle
    services: list[ServiceRecord]
    miles_per_day: float | None
    schedule: list[ScheduledService]


# --------------------------------------------------------------------------- parts


@attrs.frozen(slots=True)
class Part:
    """A part with its stock and replenishment figures (``auto.part``, a hash so stock
    can be read or patched alone). See :mod:`thorbis_automotive.inventory`.

    :ivar mean_daily_demand: ``mu``, units issued per day over the demand window.
    :ivar demand_std: ``sigma`` of the daily units.
    :ivar safety_stock: ``z * sigma * sqrt(lead time)``.
    :ivar reorder_point: ``ceil(mu * lead time + safety stock)``.
    :ivar demand_forecast_7d: ``7 * mu``.
    :ivar as_of: the day the demand window ends (excluded).
    """

    part_number: str
    description: str
    category: str
    unit_cost: decimal.Decimal
    unit_price: decimal.Decimal
    on_hand: int
    lead_time_days: int
    service_level_z: float
    mean_daily_demand: float
    demand_std: float
    safety_stock: float
    reorder_point: int
    demand_forecast_7d: float
    as_of: dt.date
    updated_at: dt.datetime


@attrs.frozen(slots=True)
class LowStockPart:
    """A result of the low-stock query: the part number, its score in the set queried
    (stock on hand, or stock minus reorder point), and its cached hash (None when not
    cached)."""

    part_number: str
    score: float
    part: Part | None


@attrs.frozen(slots=True)
class WeekDemand:
    """Units issued in one week (Monday, UTC) from ``auto.parts_demand_weekly``."""

    week_start: dt.date
    issued: int
    movements: int


@attrs.frozen(slots=True)
class PartDemand:
    """A part's weekly demand over the last 52 weeks (``auto.part_demand``); weeks
    without issues are absent."""

    part_number: str
    weeks: list[WeekDemand]


# --------------------------------------------------------------------------- labor


@attrs.frozen(slots=True)
class LaborSeasonality:
    """A service type's labor history by calendar month with its seasonal factors
    (``auto.labor_seasonality``), all from the ``auto.labor_monthly`` view; see
    :mod:`thorbis_automotive.labor`. The type's book time and rate are its
    :class:`ServiceType` (``auto.service_type``): they change with the table, these
    figures with the view's refresh.

    :ivar jobs: completed jobs in the history the factors come from (0: none, and
        every factor is 1).
    :ivar mean_hours: their mean labor hours (None without history).
    :ivar monthly_factors: twelve factors, January first.
    """

    service_type: str
    jobs: int
    mean_hours: float | None
    monthly_factors: list[float]


@attrs.frozen(slots=True)
class LaborQuote:
    """An estimate for one month: hours = the type's standard hours * the month's
    seasonal factor; amount = hours * the type's labor rate."""

    service_type: str
    month: int
    factor: float
    hours: float
    amount: decimal.Decimal


# --------------------------------------------------------------------------- bays


@attrs.frozen(slots=True)
class BayDay:
    """One row of ``auto.bay_utilisation_daily``: a bay's completed work of one UTC day.

    :ivar utilisation: labor hours / capacity hours.
    """

    bay_id: int
    bay_name: str
    repair_orders: int
    labor_hours: float
    capacity_hours: float
    utilisation: float


@attrs.frozen(slots=True)
class BayBoard:
    """Every bay's utilisation of one UTC day (``auto.bay_board``); idle bays absent."""

    day: dt.date
    bays: list[BayDay]
