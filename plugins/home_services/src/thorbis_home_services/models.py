"""The values the home-services vertical caches: enums of the domain and frozen attrs
records, one per cached shape.

Every record is plain data (no validators): the cache's codec writes them through
cattrs, and the contract kit builds arbitrary instances from the field types. Columns
of the database map one to one onto fields; :mod:`thorbis_home_services.rows` does the
conversion.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum

import attrs

__all__ = [
    "AccountStatus",
    "Customer",
    "CustomerSegment",
    "CustomerSummary",
    "CustomerType",
    "FinancialDay",
    "NearbyArea",
    "PaymentStatus",
    "Priority",
    "RankedWorkOrder",
    "ServiceAreaMetrics",
    "TechnicianPerformance",
    "TechnicianRole",
    "WorkOrder",
    "WorkOrderStatus",
]


# --------------------------------------------------------------------------- enums


class CustomerType(enum.Enum):
    """What kind of property a customer has (the seed's ``customerType``)."""

    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    INDUSTRIAL = "industrial"


class AccountStatus(enum.Enum):
    """Account standing (the seed's ``accountStatus``)."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    VIP = "vip"
    SUSPENDED = "suspended"


class PaymentStatus(enum.Enum):
    """Receivables standing (the seed's ``paymentStatus``)."""

    CURRENT = "current"
    OVERDUE_30 = "overdue_30"
    OVERDUE_60 = "overdue_60"
    COLLECTIONS = "collections"


class CustomerSegment(enum.Enum):
    """Which customer list a key holds (the seed's ``customerList(tenant, filter)``).

    * ``all``: every customer of the tenant;
    * ``active``: account status ``active`` or ``vip`` (a VIP is an active customer);
    * ``vip``: account status ``vip``.
    """

    ALL = "all"
    ACTIVE = "active"
    VIP = "vip"

    def includes(self, status: AccountStatus) -> bool:
        """Whether a customer of account ``status`` belongs to this list."""
        if self is CustomerSegment.ALL:
            return True
        if self is CustomerSegment.VIP:
            return status is AccountStatus.VIP
        return status in (AccountStatus.ACTIVE, AccountStatus.VIP)


class WorkOrderStatus(enum.Enum):
    """Life cycle of a work order."""

    PENDING = "pending"  #: requested, not yet scheduled with a technician
    SCHEDULED = "scheduled"  #: booked for a time, technician assigned
    DISPATCHED = "dispatched"  #: technician on the way
    IN_PROGRESS = "in_progress"
    ON_HOLD = "on_hold"  #: waiting for parts or the customer
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        """True while the order still needs work (not completed, not cancelled)."""
        return self not in (WorkOrderStatus.COMPLETED, WorkOrderStatus.CANCELLED)


class Priority(enum.Enum):
    """Work order priority; the seed's weights are in :mod:`thorbis_home_services.scoring`."""

    EMERGENCY = "emergency"
    URGENT = "urgent"
    HIGH = "high"
    STANDARD = "standard"
    LOW = "low"


class TechnicianRole(enum.Enum):
    """Staff roles; the first three are field roles (the seed's performance view filter)."""

    TECHNICIAN = "technician"
    SENIOR_TECHNICIAN = "senior_technician"
    FIELD_SUPERVISOR = "field_supervisor"
    DISPATCHER = "dispatcher"


# --------------------------------------------------------------------------- entities


@attrs.frozen(slots=True)
class Customer:
    """A customer row, cached as a hash (``hs.customer``) with an optimistic version.

    The seed's ``CachedCustomer`` mixed the row with aggregates (work order counts,
    lifetime value); those live in :class:`CustomerSummary`, which comes from a
    materialized view and is invalidated on its own schedule.
    """

    id: int
    first_name: str
    last_name: str
    email: str
    phone: str
    customer_type: CustomerType
    account_status: AccountStatus
    payment_status: PaymentStatus
    service_area_id: int | None
    street: str
    city: str
    postal_code: str
    longitude: float
    latitude: float
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen(slots=True)
class CustomerSummary:
    """One row of the ``hs.customer_summary`` materialized view (``hs.customer_summary``)."""

    customer_id: int
    first_name: str
    last_name: str
    email: str
    phone: str
    customer_type: CustomerType
    account_status: AccountStatus
    payment_status: PaymentStatus
    total_work_orders: int
    completed_orders: int
    lifetime_value: decimal.Decimal
    last_service_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen(slots=True)
class WorkOrder:
    """A work order (``hs.work_order``); its location is the job site."""

    id: int
    customer_id: int
    assigned_technician_id: int | None
    service_area_id: int | None
    status: WorkOrderStatus
    priority: Priority
    service_type: str
    description: str
    scheduled_at: dt.datetime
    estimated_minutes: int
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    travel_time_minutes: int | None
    longitude: float
    latitude: float
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen(slots=True)
class RankedWorkOrder:
    """A result of the high-priority pattern: an id, where it was found, its score, and
    the cached work order (None when that entry is not cached)."""

    work_order_id: int
    status: WorkOrderStatus
    score: float
    order: WorkOrder | None


# --------------------------------------------------------------------------- reports


@attrs.frozen(slots=True)
class ServiceAreaMetrics:
    """A service area with its 90-day metrics (``hs.service_area``, a hash so single
    metrics can be read or patched), from the ``hs.service_area_metrics`` view."""

    area_id: int
    name: str
    zip_codes: list[str]
    center_longitude: float
    center_latitude: float
    total_work_orders: int
    avg_travel_minutes: float | None
    area_revenue: decimal.Decimal
    unique_customers: int
    avg_quality_rating: float | None
    emergency_calls: int


@attrs.frozen(slots=True)
class TechnicianPerformance:
    """One row of the ``hs.technician_performance`` view (90 days)."""

    technician_id: int
    first_name: str
    last_name: str
    role: TechnicianRole
    total_jobs: int
    completed_jobs: int
    completion_rate: decimal.Decimal | None
    avg_job_hours: float | None
    revenue_generated: decimal.Decimal
    avg_quality_rating: float | None
    high_quality_jobs: int


@attrs.frozen(slots=True)
class FinancialDay:
    """One row of the ``hs.financial_daily`` view: a tenant's invoices of one UTC day."""

    report_date: dt.date
    invoice_count: int
    gross_revenue: decimal.Decimal
    total_tax: decimal.Decimal
    net_revenue: decimal.Decimal
    paid_invoices: int
    collected_revenue: decimal.Decimal
    avg_invoice_amount: decimal.Decimal
    max_invoice_amount: decimal.Decimal
    min_invoice_amount: decimal.Decimal


@attrs.frozen(slots=True)
class NearbyArea:
    """A result of the nearest-areas pattern: an area id, its distance from the point
    asked about, and its cached metrics (None when that hash is not cached)."""

    area_id: int
    distance_m: float
    metrics: ServiceAreaMetrics | None
