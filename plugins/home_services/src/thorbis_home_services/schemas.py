"""The key schemas of the home-services vertical.

Keys (after the cache prefix, e.g. ``tc:``; ``{t}`` is the tenant hash tag) and what
they hold:

==========================================  ======  ============================================
key                                         kind    holds
==========================================  ======  ============================================
``{t}:hs.customer:<id>``                    hash    :class:`Customer`, versioned, encrypted
``{t}:hs.customer_list:<segment>``          zset    customer ids by lifetime value
``{t}:hs.customer_summary:<id>``            value   :class:`CustomerSummary` (from the view)
``{t}:hs.work_order:<id>``                  value   :class:`WorkOrder`, encrypted
``{t}:hs.work_orders_by_status:<status>``   zset    work order ids by the seed's priority score
``{t}:hs.technician_schedule:<tech>:<d>``   zset    a technician's work orders of a day by start
``{t}:hs.schedule_geo:<day>``               geo     every appointment of a day at its job site
``{t}:hs.customer_history:<id>``            zset    completed work order ids by completion time
``{t}:hs.service_area:<id>``                hash    :class:`ServiceAreaMetrics` (from the view)
``{t}:hs.service_area_geo``                 geo     service area ids at their centres
``{t}:hs.technician_performance:<tech>``    value   :class:`TechnicianPerformance` (the view)
``{t}:hs.financial_daily:<date>``           value   :class:`FinancialDay` (from the view)
==========================================  ======  ============================================

TTLs follow the seed where it gave one (customers 1 h, work orders 30 min, schedules 2 h,
time series 24 h, area metrics 30 min); entries that mirror a materialized view live about
one refresh interval.

**Two kinds of entries, two kinds of invalidation.** Entries read from the tables are
dropped by the rules of :mod:`thorbis_home_services.rules` as soon as a change commits.
Entries read from a materialized view declare it (``mirrors=``) and carry only tags of
that view's refresh (:mod:`thorbis_home_services.views`): a change of a base table does
not change the view until it is refreshed, so dropping them at the change would only make
readers reload the same rows. No rule targets them, by schema or by tag (the contract kit
checks it); the refresh is their only invalidation.

**Absence.** Entities read by id cache the absence of a missing row for
:data:`NEGATIVE_TTL` seconds (``negative_ttl``), so reads of ids that do not exist stop
reaching PostgreSQL. Each such absence is dropped by what makes the row appear: the
INSERT of a customer or a work order fires its entity rule; a row appears in a view at
its refresh, which drops the view's tags.

Tags: ``hs.customers``, ``hs.customer_lists``, ``hs.work_orders``, ``hs.work_order_lists``,
``hs.schedules``, ``hs.history``, ``hs.area_geo`` (entries of the tables); and the views'
refresh tags ``hs.customer_summaries``, ``hs.tech_metrics``, ``hs.area_metrics``,
``hs.financial`` (the summary view also drops ``hs.customer_lists``, scored by its
lifetime values).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from thorbis_cache.cache.keys import KeySchema, SchemaKind

from thorbis_home_services.models import (
    Customer,
    CustomerSegment,
    CustomerSummary,
    FinancialDay,
    ServiceAreaMetrics,
    TechnicianPerformance,
    WorkOrder,
    WorkOrderStatus,
)

__all__ = [
    "ALL_SCHEMAS",
    "CUSTOMER",
    "CUSTOMER_HISTORY",
    "CUSTOMER_LIST",
    "CUSTOMER_SUMMARY",
    "FINANCIAL_DAILY",
    "NEGATIVE_TTL",
    "SCHEDULE_GEO",
    "SERVICE_AREA",
    "SERVICE_AREA_GEO",
    "TAGS",
    "TAG_AREA_GEO",
    "TAG_AREA_METRICS",
    "TAG_CUSTOMERS",
    "TAG_CUSTOMER_LISTS",
    "TAG_CUSTOMER_SUMMARIES",
    "TAG_FINANCIAL",
    "TAG_HISTORY",
    "TAG_SCHEDULES",
    "TAG_TECH_METRICS",
    "TAG_WORK_ORDERS",
    "TAG_WORK_ORDER_LISTS",
    "TECHNICIAN_PERFORMANCE",
    "TECHNICIAN_SCHEDULE",
    "WORK_ORDER",
    "WORK_ORDERS_BY_STATUS",
]

_HOUR = 3600.0

#: Seconds a read-through caches the absence of an entity read by id (a customer, work
#: order, view row that does not exist): long enough to absorb a burst of reads of a bad
#: id, short enough that an absence missed by an invalidation does not linger.
NEGATIVE_TTL = 60.0

# Tags: one constant each, so rules and views cannot misspell one.
TAG_CUSTOMERS = "hs.customers"
TAG_CUSTOMER_LISTS = "hs.customer_lists"
TAG_CUSTOMER_SUMMARIES = "hs.customer_summaries"
TAG_WORK_ORDERS = "hs.work_orders"
TAG_WORK_ORDER_LISTS = "hs.work_order_lists"
TAG_SCHEDULES = "hs.schedules"
TAG_HISTORY = "hs.history"
TAG_AREA_GEO = "hs.area_geo"
TAG_AREA_METRICS = "hs.area_metrics"
TAG_TECH_METRICS = "hs.tech_metrics"
TAG_FINANCIAL = "hs.financial"

CUSTOMER: KeySchema[Customer] = KeySchema(
    "hs.customer",
    Customer,
    params={"customer_id": int},
    ttl=_HOUR,
    ttl_jitter=0.1,
    # Names, e-mail, phone and home address: personal data.
    sensitive=True,
    tags=(TAG_CUSTOMERS,),
    kind=SchemaKind.HASH,
    # Dropped by hs.customer_entity, which fires on INSERT too.
    negative_ttl=NEGATIVE_TTL,
    description="a customer as a hash with an optimistic version",
)

CUSTOMER_LIST: KeySchema[int] = KeySchema(
    "hs.customer_list",
    int,
    params={"segment": CustomerSegment},
    ttl=_HOUR,
    ttl_jitter=0.1,
    tags=(TAG_CUSTOMER_LISTS,),
    kind=SchemaKind.ZSET,
    description="customer ids of a segment (all/active/vip) scored by lifetime value",
)

CUSTOMER_SUMMARY: KeySchema[CustomerSummary] = KeySchema(
    "hs.customer_summary",
    CustomerSummary,
    params={"customer_id": int},
    # The view refreshes every 15 minutes (cron, or earlier on changes) and its refresh
    # drops these entries: its tag is the only one they carry.
    ttl=0.25 * _HOUR,
    ttl_jitter=0.1,
    sensitive=True,
    tags=(TAG_CUSTOMER_SUMMARIES,),
    mirrors="hs.customer_summary",
    # A new customer appears in the view at its refresh, which drops the absence too.
    negative_ttl=NEGATIVE_TTL,
    description="a customer's aggregates from the customer summary view",
)

WORK_ORDER: KeySchema[WorkOrder] = KeySchema(
    "hs.work_order",
    WorkOrder,
    params={"work_order_id": int},
    ttl=0.5 * _HOUR,
    ttl_jitter=0.1,
    # The job site is a customer's home: location data.
    sensitive=True,
    tags=(TAG_WORK_ORDERS,),
    # Dropped by hs.work_order_entity, which fires on INSERT too.
    negative_ttl=NEGATIVE_TTL,
    description="a work order",
)

WORK_ORDERS_BY_STATUS: KeySchema[int] = KeySchema(
    "hs.work_orders_by_status",
    int,
    params={"status": WorkOrderStatus},
    ttl=0.5 * _HOUR,
    ttl_jitter=0.1,
    tags=(TAG_WORK_ORDER_LISTS,),
    kind=SchemaKind.ZSET,
    description="work order ids of a status scored by priority weight + scheduled time",
)

TECHNICIAN_SCHEDULE: KeySchema[int] = KeySchema(
    "hs.technician_schedule",
    int,
    params={"technician_id": int, "day": dt.date},
    ttl=2 * _HOUR,
    tags=(TAG_SCHEDULES,),
    kind=SchemaKind.ZSET,
    description="a technician's work order ids of one UTC day scored by start time",
)

SCHEDULE_GEO: KeySchema[int] = KeySchema(
    "hs.schedule_geo",
    int,
    params={"day": dt.date},
    ttl=2 * _HOUR,
    tags=(TAG_SCHEDULES,),
    kind=SchemaKind.GEO,
    description="work order ids of one UTC day at their job sites",
)

CUSTOMER_HISTORY: KeySchema[int] = KeySchema(
    "hs.customer_history",
    int,
    params={"customer_id": int},
    ttl=24 * _HOUR,
    ttl_jitter=0.1,
    tags=(TAG_HISTORY,),
    kind=SchemaKind.ZSET,
    description="a customer's completed work order ids scored by completion time",
)

SERVICE_AREA: KeySchema[ServiceAreaMetrics] = KeySchema(
    "hs.service_area",
    ServiceAreaMetrics,
    params={"area_id": int},
    ttl=0.5 * _HOUR,
    ttl_jitter=0.1,
    tags=(TAG_AREA_METRICS,),
    kind=SchemaKind.HASH,
    mirrors="hs.service_area_metrics",
    # An area added since the last refresh is not in the view yet; the refresh drops
    # the absence with the view's tag.
    negative_ttl=NEGATIVE_TTL,
    description="a service area and its 90-day metrics from the view",
)

SERVICE_AREA_GEO: KeySchema[int] = KeySchema(
    "hs.service_area_geo",
    int,
    # The seed never set a TTL on its area index; areas move rarely, so a day. Read from
    # the table, not the view: hs.service_area_centres drops it when an area is added,
    # moved or removed.
    ttl=24 * _HOUR,
    tags=(TAG_AREA_GEO,),
    kind=SchemaKind.GEO,
    description="service area ids at their centres",
)

TECHNICIAN_PERFORMANCE: KeySchema[TechnicianPerformance] = KeySchema(
    "hs.technician_performance",
    TechnicianPerformance,
    params={"technician_id": int},
    # The view refreshes every 4 hours (cron, or earlier on changes).
    ttl=4 * _HOUR,
    ttl_jitter=0.1,
    tags=(TAG_TECH_METRICS,),
    mirrors="hs.technician_performance",
    negative_ttl=NEGATIVE_TTL,
    description="a technician's 90-day performance from the view",
)

FINANCIAL_DAILY: KeySchema[FinancialDay] = KeySchema(
    "hs.financial_daily",
    FinancialDay,
    params={"report_date": dt.date},
    ttl=_HOUR,
    ttl_jitter=0.1,
    tags=(TAG_FINANCIAL,),
    # No negative_ttl: a day without invoices is a row of zeros, never a missing row.
    mirrors="hs.financial_daily",
    description="a tenant's invoice totals of one UTC day from the view",
)

#: Every schema, in the order the plugin registers them.
ALL_SCHEMAS: tuple[KeySchema[Any], ...] = (
    CUSTOMER,
    CUSTOMER_LIST,
    CUSTOMER_SUMMARY,
    WORK_ORDER,
    WORK_ORDERS_BY_STATUS,
    TECHNICIAN_SCHEDULE,
    SCHEDULE_GEO,
    CUSTOMER_HISTORY,
    SERVICE_AREA,
    SERVICE_AREA_GEO,
    TECHNICIAN_PERFORMANCE,
    FINANCIAL_DAILY,
)

#: Every tag a schema of this plugin carries.
TAGS: frozenset[str] = frozenset(tag for schema in ALL_SCHEMAS for tag in schema.tags)
