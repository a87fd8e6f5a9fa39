"""The vertical's invalidation rules: which cache entries a change to a table makes stale.

Declared here, executed by the core's invalidation engine. The seed's table patterns
(``KEYS t:{tenant}:hs:customers:*``...) become tags and schema targets, so nothing scans.

How the targets are meant to be read (the engine's contract, restated for this plugin):

* a schema target's parameters come from row columns; for an UPDATE the entry of the
  *old* row and of the *new* row are both stale (a work order moved from one technician
  to another leaves two schedules stale -- the seed only looked at the new row, and the
  previous technician kept a stale schedule); for a DELETE only the old row exists;
* a row whose parameter column is NULL (an unassigned work order) names no entry;
* ``significant_columns`` narrows UPDATEs only; INSERT and DELETE always fire.

Entries that mirror a materialized view are also dropped by the view's refresh tags
(:mod:`thorbis_home_services.views`); the table rules below drop them as soon as the
change commits, as the seed did, so that readers of live-loaded lists do not wait for a
refresh.
"""

from __future__ import annotations

from thorbis_cache.declarations import InvalidationRule, Operation, RuleTarget

from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    SCHEDULE_GEO,
    SERVICE_AREA,
    SERVICE_AREA_GEO,
    TAG_AREA_METRICS,
    TAG_CUSTOMER_LISTS,
    TAG_REPORTS,
    TAG_TECH_METRICS,
    TAG_WORK_ORDER_LISTS,
    TECHNICIAN_SCHEDULE,
    WORK_ORDER,
)

__all__ = [
    "ALL_RULES",
    "CUSTOMER_ENTITY",
    "CUSTOMER_LISTS_ON_MEMBERSHIP",
    "CUSTOMER_LISTS_ON_SIGNIFICANT_CHANGE",
    "CUSTOMER_SIGNIFICANT_COLUMNS",
    "INSPECTION_REPORTS",
    "INVOICE_REPORTS",
    "SERVICE_AREA_CENTRES",
    "SERVICE_AREA_ENTITY",
    "WORK_ORDER_ENTITY",
    "WORK_ORDER_HISTORY",
    "WORK_ORDER_LISTS",
    "WORK_ORDER_SCHEDULE",
]

_INSERT, _UPDATE, _DELETE = Operation.INSERT, Operation.UPDATE, Operation.DELETE
_ALL = (_INSERT, _UPDATE, _DELETE)

#: The seed's significant customer fields: a change to one of them moves the customer
#: between lists and changes report breakdowns; other edits (a phone number) do not.
CUSTOMER_SIGNIFICANT_COLUMNS = ("account_status", "payment_status", "customer_type")

# ---- customers

CUSTOMER_ENTITY = InvalidationRule(
    "hs.customer_entity",
    table="hs.customers",
    operations=(_UPDATE, _DELETE),
    # Any edit of a customer makes its cached hash stale (seed: "always invalidate the
    # specific customer").
    targets=(RuleTarget(schema=CUSTOMER.name, params={"customer_id": "id"}),),
)

CUSTOMER_LISTS_ON_SIGNIFICANT_CHANGE = InvalidationRule(
    "hs.customer_lists_on_change",
    table="hs.customers",
    operations=(_UPDATE,),
    significant_columns=CUSTOMER_SIGNIFICANT_COLUMNS,
    targets=(RuleTarget(tag=TAG_CUSTOMER_LISTS), RuleTarget(tag=TAG_REPORTS)),
)

CUSTOMER_LISTS_ON_MEMBERSHIP = InvalidationRule(
    "hs.customer_lists_on_membership",
    table="hs.customers",
    # A new or deleted customer changes every list and the aggregates (seed:
    # customer_aggregations, dashboard_metrics).
    operations=(_INSERT, _DELETE),
    targets=(RuleTarget(tag=TAG_CUSTOMER_LISTS), RuleTarget(tag=TAG_REPORTS)),
)

# ---- work orders

WORK_ORDER_ENTITY = InvalidationRule(
    "hs.work_order_entity",
    table="hs.work_orders",
    operations=(_UPDATE, _DELETE),
    targets=(RuleTarget(schema=WORK_ORDER.name, params={"work_order_id": "id"}),),
)

WORK_ORDER_LISTS = InvalidationRule(
    "hs.work_order_lists",
    table="hs.work_orders",
    operations=_ALL,
    # The list a work order sits in (status) and its score (priority, scheduled time).
    significant_columns=("status", "priority", "scheduled_at"),
    targets=(RuleTarget(tag=TAG_WORK_ORDER_LISTS),),
)

WORK_ORDER_SCHEDULE = InvalidationRule(
    "hs.work_order_schedule",
    table="hs.work_orders",
    operations=_ALL,
    # Who does it, when, where, and whether it still happens.
    significant_columns=(
        "assigned_technician_id", "scheduled_at", "status", "longitude", "latitude",
    ),
    targets=(
        RuleTarget(
            schema=TECHNICIAN_SCHEDULE.name,
            params={"technician_id": "assigned_technician_id", "day": "scheduled_day"},
        ),
        RuleTarget(schema=SCHEDULE_GEO.name, params={"day": "scheduled_day"}),
    ),
)

WORK_ORDER_HISTORY = InvalidationRule(
    "hs.work_order_history",
    table="hs.work_orders",
    operations=_ALL,
    # The time series holds completed orders by completion time.
    significant_columns=("status", "completed_at"),
    targets=(RuleTarget(schema=CUSTOMER_HISTORY.name, params={"customer_id": "customer_id"}),),
)

# ---- invoices and inspections

INVOICE_REPORTS = InvalidationRule(
    "hs.invoice_reports",
    table="hs.invoices",
    operations=_ALL,
    significant_columns=("status", "subtotal_amount", "tax_amount", "total_amount"),
    targets=(RuleTarget(tag=TAG_REPORTS),),
)

INSPECTION_REPORTS = InvalidationRule(
    "hs.inspection_reports",
    table="hs.quality_control_inspections",
    operations=_ALL,
    significant_columns=("overall_rating", "work_order_id"),
    # Ratings feed the technician and area metrics only.
    targets=(RuleTarget(tag=TAG_TECH_METRICS), RuleTarget(tag=TAG_AREA_METRICS)),
)

# ---- service areas

SERVICE_AREA_ENTITY = InvalidationRule(
    "hs.service_area_entity",
    table="hs.service_areas",
    operations=(_UPDATE, _DELETE),
    targets=(RuleTarget(schema=SERVICE_AREA.name, params={"area_id": "id"}),),
)

SERVICE_AREA_CENTRES = InvalidationRule(
    "hs.service_area_centres",
    table="hs.service_areas",
    operations=_ALL,
    significant_columns=("center_longitude", "center_latitude"),
    targets=(RuleTarget(schema=SERVICE_AREA_GEO.name, params={}),),
)

#: Every rule, in the order the plugin registers them.
ALL_RULES: tuple[InvalidationRule, ...] = (
    CUSTOMER_ENTITY,
    CUSTOMER_LISTS_ON_SIGNIFICANT_CHANGE,
    CUSTOMER_LISTS_ON_MEMBERSHIP,
    WORK_ORDER_ENTITY,
    WORK_ORDER_LISTS,
    WORK_ORDER_SCHEDULE,
    WORK_ORDER_HISTORY,
    INVOICE_REPORTS,
    INSPECTION_REPORTS,
    SERVICE_AREA_ENTITY,
    SERVICE_AREA_CENTRES,
)
