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

No rule targets an entry that mirrors a materialized view (``KeySchema.mirrors``: the
customer summaries, technician performance, financial days, service-area metrics), by
schema or by tag: a change of a base table does not change the view until the view is
refreshed, and the refresh drops those entries through the view's tags
(:mod:`thorbis_home_services.views`). Dropping them at the change, as the seed did with
its ``report:*`` wildcard, only made readers reload the same unrefreshed rows (every
invoice change emptied every report entry of the tenant). So invoices and inspections,
which feed the views only, have no rule; the rules below cover the entries read from the
tables.

The entity rules fire on INSERT too: an entity read by id caches the absence of a missing
row (``negative_ttl``), and the INSERT of that row must drop it.
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import InvalidationRule, Operation, RuleTarget

from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    SCHEDULE_GEO,
    SERVICE_AREA_GEO,
    TAG_CUSTOMER_LISTS,
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
    "SERVICE_AREA_CENTRES",
    "WORK_ORDER_ENTITY",
    "WORK_ORDER_HISTORY",
    "WORK_ORDER_LISTS",
    "WORK_ORDER_SCHEDULE",
]

_INSERT, _UPDATE, _DELETE = Operation.INSERT, Operation.UPDATE, Operation.DELETE
_ALL = (_INSERT, _UPDATE, _DELETE)

#: The seed's significant customer fields: a change to one of them can move the customer
#: between lists; other edits (a phone number) do not. (The seed also dropped its report
#: breakdowns on them; those are view mirrors now, dropped by the view's refresh.)
CUSTOMER_SIGNIFICANT_COLUMNS = ("account_status", "payment_status", "customer_type")

# ---- customers

CUSTOMER_ENTITY = InvalidationRule(
    "hs.customer_entity",
    table="hs.customers",
    # Any edit of a customer makes its cached hash stale (seed: "always invalidate the
    # specific customer"); an INSERT drops a cached absence of that id (negative_ttl).
    operations=_ALL,
    targets=(RuleTarget(schema=CUSTOMER.name, params={"customer_id": "id"}),),
)

CUSTOMER_LISTS_ON_SIGNIFICANT_CHANGE = InvalidationRule(
    "hs.customer_lists_on_change",
    table="hs.customers",
    operations=(_UPDATE,),
    significant_columns=CUSTOMER_SIGNIFICANT_COLUMNS,
    targets=(RuleTarget(tag=TAG_CUSTOMER_LISTS),),
)

CUSTOMER_LISTS_ON_MEMBERSHIP = InvalidationRule(
    "hs.customer_lists_on_membership",
    table="hs.customers",
    # A new or deleted customer changes every list (seed: customer_aggregations).
    operations=(_INSERT, _DELETE),
    targets=(RuleTarget(tag=TAG_CUSTOMER_LISTS),),
)

# ---- work orders

WORK_ORDER_ENTITY = InvalidationRule(
    "hs.work_order_entity",
    table="hs.work_orders",
    # INSERT: drops a cached absence of the new id (negative_ttl).
    operations=_ALL,
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

# ---- service areas
#
# The area hashes mirror the metrics view (no rule: its refresh drops them); the geo
# index of centres is read from the table.

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
    SERVICE_AREA_CENTRES,
)
