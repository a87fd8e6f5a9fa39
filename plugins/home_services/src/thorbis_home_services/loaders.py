"""Loads the vertical's records from PostgreSQL, for read-through, warmers and hosts.

Every function takes ``fetch``: ``async (sql, *args) -> list of row mappings`` -- the
shape of :data:`thorbis_cache.plugins.declarations.Fetch` and of
:attr:`~thorbis_cache.plugins.declarations.WarmContext.fetch`, and a one-liner over an asyncpg
pool (``pool.fetch``). So this module runs SQL without importing a driver.

**Single-key loaders** return exactly what one cache entry holds, in the shape the
core's read-through for the entry's kind expects, so a host reads any ``hs.*`` entry
through the cache with a lambda::

    customer = await cache.hash(CUSTOMER.key(tenant, customer_id=7)).get_or_load(
        lambda: loaders.customer(pool.fetch, tenant, 7))
    recent = await cache.zset(CUSTOMER_HISTORY.key(tenant, customer_id=7)).top(
        10, loader=lambda: loaders.service_history(pool.fetch, tenant, 7))

========================================  =====================================================
entry (kind)                              loader
========================================  =====================================================
``hs.customer`` (hash)                    :func:`customer` -- raises :class:`MissingRow`
``hs.customer_list`` (zset)               :func:`customer_list` -- customer id -> lifetime value
``hs.customer_summary`` (value)           :func:`customer_summary` -- raises :class:`MissingRow`
``hs.work_order`` (value)                 :func:`work_order` -- raises :class:`MissingRow`
``hs.work_orders_by_status`` (zset)       :func:`work_orders_by_status` -- id -> score
``hs.technician_schedule`` (zset)         :func:`technician_schedule` -- id -> start (Unix s)
``hs.schedule_geo`` (geo)                 :func:`schedule_geo` -- id -> (longitude, latitude)
``hs.customer_history`` (zset)            :func:`service_history` -- id -> completion (Unix s)
``hs.service_area`` (hash)                :func:`service_area` -- raises :class:`MissingRow`
``hs.service_area_geo`` (geo)             :func:`service_area_geo` -- area id -> centre
``hs.technician_performance`` (value)     :func:`technician_performance` -- raises
                                          :class:`MissingRow`
``hs.financial_daily`` (value)            :func:`financial_day` -- a quiet day is all zeros
========================================  =====================================================

A sorted set's or geo index's loader returns the *whole* structure (an empty mapping is
an empty structure, cached as such). **Batched loaders** (``customers``,
``customer_summaries``, ``service_histories``, ``work_orders``, ``work_order_lists``,
``technician_schedules``, ``service_areas``) read many entries in one query, for
warmers; the ``*_ids`` functions are the warmers' cheap first queries (ids only).

Queries live in ``sql/q_*.sql``; all of them are scoped to one tenant.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Mapping
from typing import Any

from thorbis_cache.errors import MissingRow
from thorbis_cache.plugins import declarations

from thorbis_home_services import rows
from thorbis_home_services.models import (
    AccountStatus,
    Customer,
    CustomerSegment,
    CustomerSummary,
    FinancialDay,
    Priority,
    ServiceAreaMetrics,
    TechnicianPerformance,
    WorkOrder,
    WorkOrderStatus,
)
from thorbis_home_services.scoring import work_order_score
from thorbis_home_services.sqlfiles import query

__all__ = [
    "Fetch",
    "MissingRow",
    "customer",
    "customer_list",
    "customer_segments",
    "customer_summaries",
    "customer_summary",
    "customers",
    "day_appointments",
    "day_technician_ids",
    "financial_day",
    "open_work_order_ids",
    "open_work_orders",
    "schedule_geo",
    "service_area",
    "service_area_geo",
    "service_area_ids",
    "service_area_metrics",
    "service_areas",
    "service_histories",
    "service_history",
    "technician_performance",
    "technician_schedule",
    "technician_schedules",
    "top_customer_ids",
    "top_customers",
    "work_order",
    "work_order_lists",
    "work_orders",
    "work_orders_by_status",
]

#: ``async (sql, *args) -> rows``: how loaders reach the database.
Fetch = declarations.Fetch


#: A geo index's content: member -> ``(longitude, latitude)``.
Sites = dict[int, tuple[float, float]]


async def _one(fetch: Fetch, name: str, what: str, tenant: str, ident: object) -> Mapping[str, Any]:
    return MissingRow.first(await fetch(query(name), tenant, ident), what, tenant, ident)


# --------------------------------------------------------------------------- customers


async def customers(fetch: Fetch, tenant: str, ids: Iterable[int]) -> list[Customer]:
    """The customers of ``tenant`` with these ids (absent ids are skipped), by id."""
    return [rows.customer(r) for r in await fetch(query("q_customers"), tenant, list(ids))]


async def customer(fetch: Fetch, tenant: str, customer_id: int) -> Customer:
    """One customer: the entity of its ``hs.customer`` hash.

    :raises MissingRow: no such customer.
    """
    found = await customers(fetch, tenant, [customer_id])
    return MissingRow.first(found, "hs.customer", tenant, customer_id)


async def top_customers(fetch: Fetch, tenant: str, limit: int) -> list[Customer]:
    """The ``limit`` customers of highest lifetime value (as of the last view refresh)."""
    return [rows.customer(r) for r in await fetch(query("q_top_customers"), tenant, limit)]


async def top_customer_ids(fetch: Fetch, tenant: str, limit: int) -> list[int]:
    """The ids of the ``limit`` customers of highest lifetime value (as of the last view
    refresh), highest first."""
    return [r["id"] for r in await fetch(query("q_top_customer_ids"), tenant, limit)]


async def customer_segments(
    fetch: Fetch, tenant: str
) -> dict[CustomerSegment, dict[int, float]]:
    """Every customer list of ``tenant``: segment -> {customer id: lifetime value}.

    Membership follows the customers table (a status change shows at once); the score is
    the summary view's lifetime value (0 for a customer created since its refresh).
    """
    lists: dict[CustomerSegment, dict[int, float]] = {s: {} for s in CustomerSegment}
    for row in await fetch(query("q_customer_segments"), tenant):
        status = AccountStatus(row["account_status"])
        value = float(row["lifetime_value"])
        for segment, members in lists.items():
            if segment.includes(status):
                members[row["id"]] = value
    return lists


async def customer_list(fetch: Fetch, tenant: str, segment: CustomerSegment) -> dict[int, float]:
    """One customer list (the whole ``hs.customer_list`` set): customer id -> lifetime
    value; an empty mapping for a segment without customers. (One query over the
    tenant's customers, as :func:`customer_segments`: the ``all`` list needs every one.)"""
    return (await customer_segments(fetch, tenant))[segment]


async def customer_summaries(
    fetch: Fetch, tenant: str, ids: Iterable[int]
) -> list[CustomerSummary]:
    """Summary rows of these customers (absent ids are skipped), by id."""
    found = await fetch(query("q_customer_summaries"), tenant, list(ids))
    return [rows.customer_summary(r) for r in found]


async def customer_summary(fetch: Fetch, tenant: str, customer_id: int) -> CustomerSummary:
    """One customer's summary row.

    :raises MissingRow: no such customer (or the view was refreshed before it existed).
    """
    found = await customer_summaries(fetch, tenant, [customer_id])
    return MissingRow.first(found, "hs.customer_summary", tenant, customer_id)


# --------------------------------------------------------------------------- work orders


async def work_orders(fetch: Fetch, tenant: str, ids: Iterable[int]) -> list[WorkOrder]:
    """The work orders of ``tenant`` with these ids (absent ids are skipped), by id."""
    return [rows.work_order(r) for r in await fetch(query("q_work_orders"), tenant, list(ids))]


async def work_order(fetch: Fetch, tenant: str, work_order_id: int) -> WorkOrder:
    """One work order: the value of its ``hs.work_order`` entry.

    :raises MissingRow: no such work order.
    """
    found = await work_orders(fetch, tenant, [work_order_id])
    return MissingRow.first(found, "hs.work_order", tenant, work_order_id)


async def open_work_orders(fetch: Fetch, tenant: str) -> list[WorkOrder]:
    """Every work order of ``tenant`` that is neither completed nor cancelled."""
    return [rows.work_order(r) for r in await fetch(query("q_open_work_orders"), tenant)]


async def open_work_order_ids(fetch: Fetch, tenant: str) -> list[int]:
    """The ids of every open work order of ``tenant``, ascending."""
    return [r["id"] for r in await fetch(query("q_open_work_order_ids"), tenant)]


async def work_order_lists(
    fetch: Fetch, tenant: str, statuses: Iterable[WorkOrderStatus]
) -> dict[WorkOrderStatus, dict[int, float]]:
    """Several status lists in one query: status -> {work order id: score}, where the
    score is :func:`~thorbis_home_services.scoring.score_of` the order (the seed's
    priority weight + scheduled time); a status without orders maps to ``{}``."""
    lists: dict[WorkOrderStatus, dict[int, float]] = {s: {} for s in statuses}
    wanted = [s.value for s in lists]
    for r in await fetch(query("q_work_orders_by_status"), tenant, wanted):
        # score_of(order) without building the whole order: the same two fields.
        score = work_order_score(Priority(r["priority"]), r["scheduled_at"])
        lists[WorkOrderStatus(r["status"])][r["id"]] = score
    return lists


async def work_orders_by_status(
    fetch: Fetch, tenant: str, status: WorkOrderStatus
) -> dict[int, float]:
    """One status list (the whole ``hs.work_orders_by_status`` set): work order id ->
    score (see :func:`work_order_lists`)."""
    return (await work_order_lists(fetch, tenant, [status]))[status]


async def day_appointments(fetch: Fetch, tenant: str, day: dt.date) -> list[WorkOrder]:
    """The assigned, not cancelled work orders scheduled on UTC day ``day``."""
    return [rows.work_order(r) for r in await fetch(query("q_day_appointments"), tenant, day)]


async def day_technician_ids(fetch: Fetch, tenant: str, day: dt.date) -> list[int]:
    """The technicians with an appointment on UTC day ``day``, ascending."""
    return [r["id"] for r in await fetch(query("q_day_technician_ids"), tenant, day)]


async def technician_schedules(
    fetch: Fetch, tenant: str, day: dt.date, technician_ids: Iterable[int]
) -> dict[int, dict[int, float]]:
    """Several technicians' schedules of UTC day ``day`` in one query: technician id ->
    {work order id: start in Unix seconds}; a technician without appointments maps to
    ``{}``."""
    ids = list(technician_ids)
    out: dict[int, dict[int, float]] = {t: {} for t in ids}
    for r in await fetch(query("q_technician_schedules"), tenant, day, ids):
        out[r["assigned_technician_id"]][r["id"]] = r["scheduled_at"].timestamp()
    return out


async def technician_schedule(
    fetch: Fetch, tenant: str, technician_id: int, day: dt.date
) -> dict[int, float]:
    """One technician's schedule of UTC day ``day`` (the whole ``hs.technician_schedule``
    set): work order id -> start in Unix seconds."""
    return (await technician_schedules(fetch, tenant, day, [technician_id]))[technician_id]


async def schedule_geo(fetch: Fetch, tenant: str, day: dt.date) -> Sites:
    """Every appointment of UTC day ``day`` at its job site (the whole
    ``hs.schedule_geo`` index): work order id -> ``(longitude, latitude)``."""
    return {o.id: (o.longitude, o.latitude) for o in await day_appointments(fetch, tenant, day)}


async def service_histories(
    fetch: Fetch, tenant: str, customer_ids: Iterable[int]
) -> dict[int, list[tuple[int, dt.datetime]]]:
    """Several customers' completed work orders: customer id -> ``(id, completed_at)``
    oldest first; customers without a completed order map to an empty list."""
    ids = list(customer_ids)
    out: dict[int, list[tuple[int, dt.datetime]]] = {c: [] for c in ids}
    for r in await fetch(query("q_service_histories"), tenant, ids):
        out[r["customer_id"]].append((r["id"], r["completed_at"]))
    return out


async def service_history(fetch: Fetch, tenant: str, customer_id: int) -> dict[int, float]:
    """A customer's completed work orders (the whole ``hs.customer_history`` set): work
    order id -> completion in Unix seconds; ``{}`` for a customer without one."""
    found = await fetch(query("q_service_history"), tenant, customer_id)
    return {r["id"]: r["completed_at"].timestamp() for r in found}


# --------------------------------------------------------------------------- reports


async def service_area_metrics(fetch: Fetch, tenant: str) -> list[ServiceAreaMetrics]:
    """Every service area of ``tenant`` with its metrics (from the view), by id."""
    return [
        rows.service_area_metrics(r) for r in await fetch(query("q_service_area_metrics"), tenant)
    ]


async def service_area_ids(fetch: Fetch, tenant: str) -> list[int]:
    """The ids of ``tenant``'s service areas in the metrics view, ascending."""
    return [r["id"] for r in await fetch(query("q_service_area_ids"), tenant)]


async def service_areas(
    fetch: Fetch, tenant: str, ids: Iterable[int]
) -> list[ServiceAreaMetrics]:
    """These service areas with their metrics, from the view (absent ids are skipped),
    by id."""
    found = await fetch(query("q_service_areas"), tenant, list(ids))
    return [rows.service_area_metrics(r) for r in found]


async def service_area(fetch: Fetch, tenant: str, area_id: int) -> ServiceAreaMetrics:
    """One service area with its metrics: the entity of its ``hs.service_area`` hash.

    :raises MissingRow: no such area in the view (or one added since its refresh).
    """
    found = await service_areas(fetch, tenant, [area_id])
    return MissingRow.first(found, "hs.service_area", tenant, area_id)


async def service_area_geo(fetch: Fetch, tenant: str) -> Sites:
    """Every service area at its centre (the whole ``hs.service_area_geo`` index), from
    the table: area id -> ``(longitude, latitude)``."""
    found = await fetch(query("q_service_area_centres"), tenant)
    return {r["id"]: (r["center_longitude"], r["center_latitude"]) for r in found}


async def technician_performance(
    fetch: Fetch, tenant: str, technician_id: int
) -> TechnicianPerformance:
    """One technician's performance row.

    :raises MissingRow: no such field technician in the view.
    """
    row = await _one(
        fetch, "q_technician_performance", "hs.technician_performance", tenant, technician_id
    )
    return rows.technician_performance(row)


async def financial_day(fetch: Fetch, tenant: str, day: dt.date) -> FinancialDay:
    """The invoice totals of one UTC day; a day without invoices is all zeros."""
    found = await fetch(query("q_financial_day"), tenant, day)
    if found:
        return rows.financial_day(found[0])
    # A quiet day is a fact worth caching, not a missing row.
    zero = decimal.Decimal("0.00")
    return FinancialDay(day, 0, zero, zero, zero, 0, zero, zero, zero, zero)
