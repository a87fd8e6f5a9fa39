"""Database rows to model records.

A row is any mapping of column name to value (an ``asyncpg.Record``, or what
``WarmContext.fetch`` returns). Columns map onto fields of the same name unless a
rename is given; enum fields take the column's text value. The plan per record class is
built once, so converting a row is one dict lookup and one call per field.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import attrs

from thorbis_home_services.models import (
    Customer,
    CustomerSummary,
    FinancialDay,
    ServiceAreaMetrics,
    TechnicianPerformance,
    WorkOrder,
)

__all__ = [
    "customer",
    "customer_summary",
    "financial_day",
    "from_row",
    "service_area_metrics",
    "technician_performance",
    "work_order",
]

T = TypeVar("T")

_Plan = tuple[tuple[str, str, Callable[[Any], Any] | None], ...]

#: View columns whose names differ from the record's fields (the view keeps the seed's).
_AREA_RENAMES = {
    "area_id": "service_area_id",
    "name": "area_name",
    "avg_travel_minutes": "avg_travel_time",
}


_PLANS: dict[tuple[object, tuple[tuple[str, str], ...]], _Plan] = {}


def _plan(cls: object, renames: tuple[tuple[str, str], ...]) -> _Plan:
    plan = _PLANS.get((cls, renames))
    if plan is None:
        columns = dict(renames)
        steps = []
        for field in attrs.fields(attrs.resolve_types(cast(Any, cls))):
            tp = field.type
            convert = tp if isinstance(tp, type) and issubclass(tp, enum.Enum) else None
            steps.append((field.name, columns.get(field.name, field.name), convert))
        plan = _PLANS[(cls, renames)] = tuple(steps)
    return plan


def from_row(
    cls: type[T], row: Mapping[str, Any], renames: Mapping[str, str] | None = None
) -> T:
    """Build a ``cls`` record from ``row``.

    :param cls: an attrs record class of :mod:`thorbis_home_services.models`.
    :param row: the row.
    :param renames: field name -> column name, for columns named otherwise.
    :raises KeyError: a column is missing (the query and the record disagree).
    :raises ValueError: an enum column holds a value the enum does not know.
    """
    plan = _plan(cls, tuple(sorted((renames or {}).items())))
    kwargs = {}
    for name, column, convert in plan:
        value = row[column]
        kwargs[name] = value if convert is None or value is None else convert(value)
    return cast(T, cast(Any, cls)(**kwargs))


def customer(row: Mapping[str, Any]) -> Customer:
    """A :class:`Customer` from a ``hs.customers`` row."""
    return from_row(Customer, row)


def customer_summary(row: Mapping[str, Any]) -> CustomerSummary:
    """A :class:`CustomerSummary` from a ``hs.customer_summary`` row."""
    return from_row(CustomerSummary, row)


def work_order(row: Mapping[str, Any]) -> WorkOrder:
    """A :class:`WorkOrder` from a ``hs.work_orders`` row."""
    return from_row(WorkOrder, row)


def service_area_metrics(row: Mapping[str, Any]) -> ServiceAreaMetrics:
    """A :class:`ServiceAreaMetrics` from a ``hs.service_area_metrics`` row."""
    return from_row(ServiceAreaMetrics, row, _AREA_RENAMES)


def technician_performance(row: Mapping[str, Any]) -> TechnicianPerformance:
    """A :class:`TechnicianPerformance` from a ``hs.technician_performance`` row."""
    return from_row(TechnicianPerformance, row)


def financial_day(row: Mapping[str, Any]) -> FinancialDay:
    """A :class:`FinancialDay` from a ``hs.financial_daily`` row."""
    return from_row(FinancialDay, row)
