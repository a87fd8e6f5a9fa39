"""The vertical's materialized views: the seed's four, fixed, with their refresh policies.

Each view's ``SELECT`` lives in ``sql/mv_<name>.sql`` with a header listing what was
fixed relative to the seed. Every view has a unique index, so it can be refreshed
``CONCURRENTLY`` (readers are never blocked). Cron strings are the seed's ``pg_cron``
schedule; the customer summary also carries the seed's smart-refresh thresholds (15
minutes, 100 changes; the core's smart refresh needs both, where the seed's function
fired on either), and the technician board a smart refresh of our own.

After a refresh, the entries mirroring the view are dropped through the view's tags.
Those entries (``KeySchema.mirrors``) carry only such tags and no rule targets them, so
the refresh is their only invalidation: between refreshes they are served from the cache
whatever changes in the view's sources (the view would answer the same rows anyway).
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import MaterializedView, RefreshPolicy

from thorbis_home_services.schemas import (
    TAG_AREA_METRICS,
    TAG_CUSTOMER_LISTS,
    TAG_CUSTOMER_SUMMARIES,
    TAG_FINANCIAL,
    TAG_TECH_METRICS,
)
from thorbis_home_services.sqlfiles import query

__all__ = [
    "ALL_VIEWS",
    "CUSTOMER_SUMMARY_VIEW",
    "FINANCIAL_DAILY_VIEW",
    "SERVICE_AREA_METRICS_VIEW",
    "TECHNICIAN_PERFORMANCE_VIEW",
]

CUSTOMER_SUMMARY_VIEW = MaterializedView(
    "hs.customer_summary",
    query("mv_customer_summary"),
    unique_index=("tenant_id", "customer_id"),
    # A B-tree is scanned backwards as readily as forwards: no DESC needed for "top by
    # lifetime value", and plain column names keep the declaration checkable.
    indexes=(("tenant_id", "account_status"), ("tenant_id", "lifetime_value")),
    sources=("hs.customers", "hs.work_orders", "hs.invoices"),
    # Seed: every 15 minutes; check_mv_refresh_needed(threshold 15 min, > 100 changes).
    refresh=RefreshPolicy(
        cron="*/15 * * * *", max_staleness=15 * 60.0, min_changes=100, concurrently=True
    ),
    # The summaries mirror the view; the lists are scored by its lifetime value (their
    # membership follows hs.customers, through the customer rules).
    tags=(TAG_CUSTOMER_SUMMARIES, TAG_CUSTOMER_LISTS),
)

FINANCIAL_DAILY_VIEW = MaterializedView(
    "hs.financial_daily",
    query("mv_financial_daily"),
    unique_index=("tenant_id", "report_date"),
    sources=("hs.invoices",),
    refresh=RefreshPolicy(cron="0 1 * * *", concurrently=True),  # seed: daily at 1 AM
    tags=(TAG_FINANCIAL,),
)

TECHNICIAN_PERFORMANCE_VIEW = MaterializedView(
    "hs.technician_performance",
    query("mv_technician_performance"),
    unique_index=("tenant_id", "technician_id"),
    sources=(
        "hs.technicians",
        "hs.work_orders",
        "hs.invoices",
        "hs.quality_control_inspections",
    ),
    # Seed: every 4 hours. Ours: also a smart refresh once the board is at least 30
    # minutes old and 200 rows of its sources changed (a busy day's completions and
    # inspections show before the next 4-hour slot).
    refresh=RefreshPolicy(cron="0 */4 * * *", max_staleness=30 * 60.0, min_changes=200,
                          concurrently=True),
    tags=(TAG_TECH_METRICS,),
)

SERVICE_AREA_METRICS_VIEW = MaterializedView(
    "hs.service_area_metrics",
    query("mv_service_area_metrics"),
    unique_index=("tenant_id", "service_area_id"),
    sources=(
        "hs.service_areas",
        "hs.work_orders",
        "hs.invoices",
        "hs.quality_control_inspections",
    ),
    refresh=RefreshPolicy(cron="0 2 * * *", concurrently=True),  # seed: daily at 2 AM
    # The area hashes. The geo index of centres is read from hs.service_areas itself and
    # follows that table's rule, not this refresh.
    tags=(TAG_AREA_METRICS,),
)

#: Every view, in creation order.
ALL_VIEWS: tuple[MaterializedView, ...] = (
    CUSTOMER_SUMMARY_VIEW,
    FINANCIAL_DAILY_VIEW,
    TECHNICIAN_PERFORMANCE_VIEW,
    SERVICE_AREA_METRICS_VIEW,
)
