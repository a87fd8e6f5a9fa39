"""The vertical's materialized views, with their refresh policies.

Each view's ``SELECT`` lives in ``sql/mv_<name>.sql`` with a header saying what it
computes. Every view has a unique index on plain columns (every ``GROUP BY`` column),
so it refreshes ``CONCURRENTLY`` and readers are never blocked. After a refresh, the
cache entries mirroring the view are dropped through the view's tags: each mirror
declares its view (``KeySchema.mirrors``) and carries the view's tag, and no table rule
targets it (:mod:`thorbis_automotive.schemas`).

=============================  ==============================  ==================================
view                           unique index                    refresh
=============================  ==============================  ==================================
``auto.parts_demand_weekly``   tenant, part number, week       every 6 h; or 500 changes, 12 h
``auto.labor_monthly``         tenant, service type, month     daily 03:00
``auto.bay_utilisation_daily`` tenant, bay, day                hourly; or 50 changes, 2 h
=============================  ==============================  ==================================

Their mirrors, in that order: ``auto.part_demand``, ``auto.labor_seasonality``,
``auto.bay_board``.
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import MaterializedView, RefreshPolicy

from thorbis_automotive.schemas import TAG_LABOR, TAG_PARTS_DEMAND, TAG_UTILISATION
from thorbis_automotive.sqlfiles import query

__all__ = ["ALL_VIEWS", "BAY_UTILISATION_VIEW", "LABOR_MONTHLY_VIEW", "PARTS_DEMAND_VIEW"]

PARTS_DEMAND_VIEW = MaterializedView(
    "auto.parts_demand_weekly",
    query("mv_parts_demand_weekly"),
    unique_index=("tenant_id", "part_number", "week_start"),
    indexes=(("tenant_id", "week_start"),),
    sources=("auto.stock_movements",),
    # Busy counters issue parts all day: refresh early after 500 movements, and never
    # leave the weekly figures more than 12 hours behind.
    refresh=RefreshPolicy(
        cron="0 */6 * * *", max_staleness=12 * 3600.0, min_changes=500, concurrently=True
    ),
    tags=(TAG_PARTS_DEMAND,),
)

LABOR_MONTHLY_VIEW = MaterializedView(
    "auto.labor_monthly",
    query("mv_labor_monthly"),
    unique_index=("tenant_id", "service_type", "month"),
    sources=("auto.repair_orders",),
    # Three years of history move slowly: a nightly refresh is plenty.
    refresh=RefreshPolicy(cron="0 3 * * *", concurrently=True),
    tags=(TAG_LABOR,),
)

BAY_UTILISATION_VIEW = MaterializedView(
    "auto.bay_utilisation_daily",
    query("mv_bay_utilisation_daily"),
    unique_index=("tenant_id", "bay_id", "day"),
    indexes=(("tenant_id", "day"),),
    sources=("auto.repair_orders", "auto.bays"),
    # The shop-floor board: hourly, earlier after 50 repair-order changes.
    refresh=RefreshPolicy(
        cron="0 * * * *", max_staleness=2 * 3600.0, min_changes=50, concurrently=True
    ),
    tags=(TAG_UTILISATION,),
)

#: Every view, in creation order.
ALL_VIEWS: tuple[MaterializedView, ...] = (
    PARTS_DEMAND_VIEW,
    LABOR_MONTHLY_VIEW,
    BAY_UTILISATION_VIEW,
)
