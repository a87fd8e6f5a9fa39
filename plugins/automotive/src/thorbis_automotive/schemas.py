"""The key schemas of the automotive vertical.

Keys (after the cache prefix; ``{t}`` is the tenant hash tag) and what they hold:

=============================================  =====  ==========================================
key                                            kind   holds
=============================================  =====  ==========================================
``{t}:auto.vehicle_history:<vin>``             value  :class:`VehicleHistory`, encrypted
``{t}:auto.make_model:<make>:<model>``         zset   VINs of a make and model by model year
``{t}:auto.part:<part number>``                hash   :class:`Part`, versioned
``{t}:auto.parts_by_stock``                    zset   part numbers by stock on hand
``{t}:auto.parts_reorder_margin``              zset   part numbers by on hand - reorder point
``{t}:auto.service_type:<code>``               value  :class:`ServiceType`
``{t}:auto.part_demand:<part number>``         value  :class:`PartDemand` (mirrors a view)
``{t}:auto.labor_seasonality:<service type>``  value  :class:`LaborSeasonality` (mirrors a view)
``{t}:auto.bay_board:<day>``                   value  :class:`BayBoard` (mirrors a view)
=============================================  =====  ==========================================

TTLs follow the seed (history 2 h, make/model sets 24 h, parts 30 min) or the refresh of
the view an entry mirrors.

**Absent rows.** The entities read by id -- a vehicle's history, a part, a service
type -- cache the absence of a row for :data:`NEGATIVE_TTL` seconds (``negative_ttl``):
a read-through of an unknown VIN, part number or code raises
:class:`~thorbis_cache.errors.MissingRow` without reaching PostgreSQL again. Each has a
rule firing on the INSERT of its row (:mod:`thorbis_automotive.rules`:
``auto.vehicle_entity``, ``auto.part_entity``, ``auto.service_type_change``), which
drops the absence the moment the row exists.

**View mirrors.** The schemas whose loader reads a materialized view declare it
(``mirrors``) and carry only that view's refresh tag (and :data:`TAG_REPORTS`): they
change when the view is refreshed, not when its base tables do, so no rule targets them
-- a rule would only make readers reload the same unrefreshed rows. That is why a
service type's book time and rate (a table row, ``auto.service_type``) and its seasonal
factors (the view, ``auto.labor_seasonality``) are cached apart.

VINs are validated by the schema itself (``validators={"vin": VinCheck(...)}``): every
key of ``auto.vehicle_history`` holds a VIN as the database stores it, whoever builds
it -- :func:`vehicle_history_key` (which normalises first; the plugin's loaders, writers
and patterns all use it), a warmer, or the invalidation engine from a changed row. A bad
VIN is an :class:`~thorbis_automotive.vin.InvalidVinError` naming
``auto.vehicle_history`` and ``vin``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from thorbis_cache.cache.keys import CacheKey, KeySchema, SchemaKind

from thorbis_automotive.models import (
    BayBoard,
    LaborSeasonality,
    Part,
    PartDemand,
    ServiceType,
    VehicleHistory,
)
from thorbis_automotive.vin import CheckDigitRule, VinCheck, normalize_vin, validate_vin

__all__ = [
    "ALL_SCHEMAS",
    "BAY_BOARD",
    "LABOR_SEASONALITY",
    "MAKE_MODEL",
    "NEGATIVE_TTL",
    "PART",
    "PARTS_BY_STOCK",
    "PARTS_REORDER_MARGIN",
    "PART_DEMAND",
    "SERVICE_TYPE",
    "TAGS",
    "TAG_HISTORY",
    "TAG_LABOR",
    "TAG_MAKE_MODEL",
    "TAG_PARTS",
    "TAG_PARTS_DEMAND",
    "TAG_REPORTS",
    "TAG_SERVICE_TYPES",
    "TAG_STOCK",
    "TAG_UTILISATION",
    "VEHICLE_HISTORY",
    "vehicle_history_key",
]

_HOUR = 3600.0

#: Seconds an absent vehicle, part or service type stays cached as absent. The INSERT
#: rules drop it sooner; the bound is for a row inserted while the worker is behind.
NEGATIVE_TTL = 60.0

TAG_HISTORY = "auto.history"
TAG_MAKE_MODEL = "auto.make_model"
TAG_PARTS = "auto.parts"
TAG_STOCK = "auto.stock"
TAG_SERVICE_TYPES = "auto.service_types"
TAG_PARTS_DEMAND = "auto.parts_demand"
TAG_LABOR = "auto.labor"
TAG_UTILISATION = "auto.utilisation"
#: Every entry that mirrors a materialized view (no rule targets it: the views'
#: refreshes drop their own mirrors by the tags above).
TAG_REPORTS = "auto.reports"

VEHICLE_HISTORY: KeySchema[VehicleHistory] = KeySchema(
    "auto.vehicle_history",
    VehicleHistory,
    params={"vin": str},
    validators={"vin": VinCheck("auto.vehicle_history")},
    ttl=2 * _HOUR,  # seed: SETEX 7200
    ttl_jitter=0.1,
    # A VIN with its service history identifies a person's car: personal data.
    sensitive=True,
    tags=(TAG_HISTORY,),
    negative_ttl=NEGATIVE_TTL,
    description="a vehicle's completed services and maintenance schedule, by VIN",
)

MAKE_MODEL: KeySchema[str] = KeySchema(
    "auto.make_model",
    str,
    params={"make": str, "model": str},
    ttl=24 * _HOUR,  # seed: EXPIRE 86400
    ttl_jitter=0.1,
    tags=(TAG_MAKE_MODEL,),
    kind=SchemaKind.ZSET,
    description="VINs of one make and model scored by model year",
)

PART: KeySchema[Part] = KeySchema(
    "auto.part",
    Part,
    params={"part_number": str},
    ttl=0.5 * _HOUR,  # seed: EXPIRE 1800
    ttl_jitter=0.1,
    tags=(TAG_PARTS,),
    kind=SchemaKind.HASH,
    negative_ttl=NEGATIVE_TTL,
    description="a part with stock on hand, demand statistics and reorder point",
)

PARTS_BY_STOCK: KeySchema[str] = KeySchema(
    "auto.parts_by_stock",
    str,
    ttl=0.5 * _HOUR,
    tags=(TAG_STOCK,),
    kind=SchemaKind.ZSET,
    description="part numbers scored by stock on hand (the seed's by_stock set)",
)

PARTS_REORDER_MARGIN: KeySchema[str] = KeySchema(
    "auto.parts_reorder_margin",
    str,
    ttl=0.5 * _HOUR,
    tags=(TAG_STOCK,),
    kind=SchemaKind.ZSET,
    description="part numbers scored by stock on hand minus reorder point",
)

SERVICE_TYPE: KeySchema[ServiceType] = KeySchema(
    "auto.service_type",
    ServiceType,
    params={"code": str},
    ttl=6 * _HOUR,  # reference data, dropped by its rule when it changes
    ttl_jitter=0.1,
    tags=(TAG_SERVICE_TYPES,),
    negative_ttl=NEGATIVE_TTL,
    description="a service type's maintenance interval, book labor time and rate",
)

PART_DEMAND: KeySchema[PartDemand] = KeySchema(
    "auto.part_demand",
    PartDemand,
    params={"part_number": str},
    ttl=6 * _HOUR,  # the view refreshes every 6 hours
    ttl_jitter=0.1,
    tags=(TAG_REPORTS, TAG_PARTS_DEMAND),
    mirrors="auto.parts_demand_weekly",
    description="a part's weekly issued units over 52 weeks, from the view",
)

LABOR_SEASONALITY: KeySchema[LaborSeasonality] = KeySchema(
    "auto.labor_seasonality",
    LaborSeasonality,
    params={"service_type": str},
    ttl=24 * _HOUR,  # the view refreshes daily, and its refresh drops the entries
    ttl_jitter=0.1,
    tags=(TAG_REPORTS, TAG_LABOR),
    mirrors="auto.labor_monthly",
    description="a service type's labor history by month and seasonal factors, from the view",
)

BAY_BOARD: KeySchema[BayBoard] = KeySchema(
    "auto.bay_board",
    BayBoard,
    params={"day": dt.date},
    ttl=_HOUR,  # the view refreshes hourly
    ttl_jitter=0.1,
    tags=(TAG_REPORTS, TAG_UTILISATION),
    mirrors="auto.bay_utilisation_daily",
    description="every bay's utilisation of one UTC day, from the view",
)

#: Every schema, in the order the plugin registers them.
ALL_SCHEMAS: tuple[KeySchema[Any], ...] = (
    VEHICLE_HISTORY,
    MAKE_MODEL,
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    SERVICE_TYPE,
    PART_DEMAND,
    LABOR_SEASONALITY,
    BAY_BOARD,
)

#: Every tag a schema of this plugin carries.
TAGS: frozenset[str] = frozenset(tag for schema in ALL_SCHEMAS for tag in schema.tags)


def vehicle_history_key(
    tenant: str, vin: str, *, rule: CheckDigitRule = CheckDigitRule.NORTH_AMERICA
) -> CacheKey[VehicleHistory]:
    """The history key of a VIN, normalised (stripped, upper case) first; the schema
    checks it (the default rule, the database's), and ``rule`` too when it is another.

    :raises InvalidVinError: naming ``auto.vehicle_history`` and ``vin``.
    :raises InvalidParameterError: ``vin`` is not a string.
    """
    clean = normalize_vin(vin)
    if rule is not CheckDigitRule.NORTH_AMERICA:
        validate_vin(clean, schema=VEHICLE_HISTORY.name, parameter="vin", rule=rule)
    return VEHICLE_HISTORY.key(tenant, vin=clean)
