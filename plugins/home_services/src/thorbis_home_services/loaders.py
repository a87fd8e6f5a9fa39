"""Loads the vertical's records from PostgreSQL, for warmers and for host loaders.

Every function takes ``fetch``: ``async (sql, *args) -> list of row mappings`` -- the
shape of :attr:`thorbis_cache.declarations.WarmContext.fetch`, and a one-liner over an
asyncpg pool (``pool.fetch``). So this module runs SQL without importing a driver, and a
host uses the same loaders with ``get_or_load``::

    customer = await cache.get_or_load(
        CUSTOMER_SUMMARY.key(tenant, customer_id=7),
        lambda: loaders.customer_summary(pool.fetch, tenant, 7),
    )

Queries live in ``sql/q_*.sql``; all of them are scoped to one tenant.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Mapping
from typing import Any

from thorbis_cache import declarations
from thorbis_cache.errors import MissingRow

from thorbis_home_services import rows
from thorbis_home_services.models import (
    AccountStatus,
    Customer,
    CustomerSegment,
    CustomerSummary,
    FinancialDay,
    ServiceAreaMetrics,
    TechnicianPerformance,
    WorkOrder,
)
from thorbis_home_services.sqlfiles import query

__all__ = [
    "Fetch",
    "MissingRow",
    "customer_segments",
    "customer_summaries",
    "customer_summary",
    "customers",
    "day_appointments",
    "financial_day",
    "open_work_orders",
    "service_area_metrics",
    "service_histories",
    "service_history",
    "technician_performance",
    "top_customers",
    "work_orders",
]

#: ``async (sql, *args) -> rows``: how loaders reach the database.
Fetch = declarations.Fetch


async def _one(fetch: Fetch, name: str, what: str, tenant: str, ident: object) -> Mapping[str, Any]:
    found = await fetch(query(name), tenant, ident)
    if not found:
        raise MissingRow(what, tenant, ident)
    return found[0]


# --------------------------------------------------------------------------- customers


async def customers(fetch: Fetch, tenant: str, ids: Iterable[int]) -> list[Customer]:
    """The customers of ``tenant`` with these ids (absent ids are skipped), by id."""
    return [rows.customer(r) for r in await fetch(query("q_customers"), tenant, list(ids))]


async def top_customers(fetch: Fetch, tenant: str, limit: int) -> list[Customer]:
    """The ``limit`` customers of highest lifetime value (as of the last view refresh)."""
    return [rows.customer(r) for r in await fetch(query("q_top_customers"), tenant, limit)]


async def customer_segments(
    fetch: Fetch, tenant: str
) -> dict[CustomerSegment, dict[int, float]]:
    """Every customer list of ``tenant``: segment -> {customer id: lifetime value}."""
    lists: dict[CustomerSegment, dict[int, float]] = {s: {} for s in CustomerSegment}
    for row in await fetch(query("q_customer_segments"), tenant):
        status = AccountStatus(row["account_status"])
        value = float(row["lifetime_value"])
        for segment, members in lists.items():
            if segment.includes(status):
                members[row["id"]] = value
    return lists


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
    if not found:
        raise MissingRow("hs.customer_summary", tenant, customer_id)
    return found[0]


# --------------------------------------------------------------------------- work orders


async def work_orders(fetch: Fetch, tenant: str, ids: Iterable[int]) -> list[WorkOrder]:
    """The work orders of ``tenant`` with these ids (absent ids are skipped), by id."""
    return [rows.work_order(r) for r in await fetch(query("q_work_orders"), tenant, list(ids))]


async def open_work_orders(fetch: Fetch, tenant: str) -> list[WorkOrder]:
    """Every work order of ``tenant`` that is neither completed nor cancelled."""
    return [rows.work_order(r) for r in await fetch(query("q_open_work_orders"), tenant)]


async def day_appointments(fetch: Fetch, tenant: str, day: dt.date) -> list[WorkOrder]:
    """The assigned, not cancelled work orders scheduled on UTC day ``day``."""
    return [rows.work_order(r) for r in await fetch(query("q_day_appointments"), tenant, day)]


async def service_history(
    fetch: Fetch, tenant: str, customer_id: int
) -> list[tuple[int, dt.datetime]]:
    """A customer's completed work orders as ``(id, completed_at)``, oldest first."""
    found = await fetch(query("q_service_history"), tenant, customer_id)
    return [(r["id"], r["completed_at"]) for r in found]


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


# --------------------------------------------------------------------------- reports


async def service_area_metrics(fetch: Fetch, tenant: str) -> list[ServiceAreaMetrics]:
    """Every service area of ``tenant`` with its metrics, by id."""
    return [
        rows.service_area_metrics(r) for r in await fetch(query("q_service_area_metrics"), tenant)
    ]


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
