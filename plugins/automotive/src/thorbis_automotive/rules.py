"""The vertical's invalidation rules: which cache entries a change to a table makes stale.

Declared here, executed by the core's invalidation engine (for an UPDATE a schema
target names the entry of the old and of the new row; a NULL parameter names none;
``significant_columns`` narrows UPDATEs only).

The two the issue asks for:

* **a stock movement** updates the part's hash and the stock sets: inserting into
  ``auto.stock_movements`` fires :data:`STOCK_MOVEMENT` (the part's hash: its demand
  statistics and reorder point include the movement; the reorder-margin set), and the
  ledger trigger's UPDATE of ``auto.parts.on_hand`` fires :data:`PART_ENTITY` and
  :data:`PART_STOCK_SETS` (the hash again, the by-stock and margin sets). The next read
  reloads them from PostgreSQL.
* **a completed repair order** invalidates the vehicle's history:
  :data:`REPAIR_ORDER_HISTORY` (status, completion, odometer, service type, amounts).

Entries mirroring a view (weekly demand, seasonal labor factors, bay boards) go with the
view's refresh tags (:mod:`thorbis_automotive.views`) -- no rule targets them, by schema
or by tag, since until the refresh a reload would read the same view rows; a change of a
service type's interval, time or rate drops the type's entry and every schedule at once.

**INSERT rules drop cached absences.** The vehicle history, the part and the service
type cache a missing row for ``negative_ttl`` seconds
(:data:`~thorbis_automotive.schemas.NEGATIVE_TTL`), so :data:`VEHICLE_ENTITY`,
:data:`PART_ENTITY` and :data:`SERVICE_TYPE_CHANGE` fire on INSERT too: a row inserted
after a read that found none is read at once, not after the absence expires.
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import InvalidationRule, Operation, RuleTarget

from thorbis_automotive.schemas import (
    MAKE_MODEL,
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    SERVICE_TYPE,
    TAG_HISTORY,
    VEHICLE_HISTORY,
)

__all__ = [
    "ALL_RULES",
    "MAKE_MODEL_MEMBERSHIP",
    "PART_ENTITY",
    "PART_STOCK_SETS",
    "REPAIR_ORDER_HISTORY",
    "SERVICE_TYPE_CHANGE",
    "STOCK_MOVEMENT",
    "VEHICLE_ENTITY",
]

_INSERT, _UPDATE, _DELETE = Operation.INSERT, Operation.UPDATE, Operation.DELETE
_ALL = (_INSERT, _UPDATE, _DELETE)

# ---- vehicles and repair orders

REPAIR_ORDER_HISTORY = InvalidationRule(
    "auto.repair_order_history",
    table="auto.repair_orders",
    operations=_ALL,
    # What a history shows: completed orders, their date, odometer, type and amounts.
    # An open order's bay or technician changing does not touch it.
    significant_columns=(
        "status", "completed_at", "odometer_miles", "service_type", "vin", "labor_hours",
        "labor_amount", "parts_amount",
    ),
    targets=(RuleTarget(schema=VEHICLE_HISTORY.name, params={"vin": "vin"}),),
)

VEHICLE_ENTITY = InvalidationRule(
    "auto.vehicle_entity",
    table="auto.vehicles",
    # INSERT: a history read before the vehicle existed is cached as absent.
    operations=_ALL,
    targets=(RuleTarget(schema=VEHICLE_HISTORY.name, params={"vin": "vin"}),),
)

MAKE_MODEL_MEMBERSHIP = InvalidationRule(
    "auto.make_model_membership",
    table="auto.vehicles",
    operations=_ALL,
    # The set a VIN sits in (make, model) and its score (year); a re-badged vehicle
    # leaves the old set and joins the new one (old and new rows are both targeted).
    significant_columns=("make", "model", "model_year"),
    targets=(RuleTarget(schema=MAKE_MODEL.name, params={"make": "make", "model": "model"}),),
)

# ---- parts and stock

PART_ENTITY = InvalidationRule(
    "auto.part_entity",
    table="auto.parts",
    # INSERT: a part read before it existed is cached as absent.
    operations=_ALL,
    targets=(RuleTarget(schema=PART.name, params={"part_number": "part_number"}),),
)

PART_STOCK_SETS = InvalidationRule(
    "auto.part_stock_sets",
    table="auto.parts",
    operations=_ALL,
    # Scores: on hand (by-stock), on hand - reorder point (margin; the reorder point
    # moves with the lead time and z).
    significant_columns=("on_hand", "lead_time_days", "service_level_z"),
    targets=(
        RuleTarget(schema=PARTS_BY_STOCK.name, params={}),
        RuleTarget(schema=PARTS_REORDER_MARGIN.name, params={}),
    ),
)

STOCK_MOVEMENT = InvalidationRule(
    "auto.stock_movement",
    table="auto.stock_movements",
    operations=_ALL,
    targets=(
        RuleTarget(schema=PART.name, params={"part_number": "part_number"}),
        RuleTarget(schema=PARTS_REORDER_MARGIN.name, params={}),
    ),
)

# ---- reference data

SERVICE_TYPE_CHANGE = InvalidationRule(
    "auto.service_type_change",
    table="auto.service_types",
    operations=_ALL,
    significant_columns=(
        "name", "interval_miles", "interval_days", "standard_hours", "labor_rate",
    ),
    # The type's own entry (on INSERT: its cached absence). Every schedule lists every
    # service type: a new, removed or re-timed type changes them all. Its seasonal
    # factors come from auto.labor_monthly alone and follow that view's refresh.
    targets=(
        RuleTarget(schema=SERVICE_TYPE.name, params={"code": "code"}),
        RuleTarget(tag=TAG_HISTORY),
    ),
)

#: Every rule, in the order the plugin registers them.
ALL_RULES: tuple[InvalidationRule, ...] = (
    REPAIR_ORDER_HISTORY,
    VEHICLE_ENTITY,
    MAKE_MODEL_MEMBERSHIP,
    PART_ENTITY,
    PART_STOCK_SETS,
    STOCK_MOVEMENT,
    SERVICE_TYPE_CHANGE,
)
