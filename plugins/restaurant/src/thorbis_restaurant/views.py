"""The vertical's materialized views and their refresh policies.

Each view's ``SELECT`` lives in ``sql/mv_<name>.sql`` with a header saying what it
computes and why it is written so. Both have a unique index on plain columns (exactly
their ``GROUP BY`` keys), so they refresh ``CONCURRENTLY`` without blocking readers.
After a refresh the cached copies of their rows are dropped through the view's tags.
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import MaterializedView, RefreshPolicy

from thorbis_restaurant.schemas import TAG_ITEM_SALES, TAG_TURNOVER
from thorbis_restaurant.sqlfiles import query

__all__ = ["ALL_VIEWS", "ITEM_SALES_DAILY_VIEW", "TABLE_TURNOVER_VIEW"]

ITEM_SALES_DAILY_VIEW = MaterializedView(
    "rest.item_sales_daily",
    query("mv_item_sales_daily"),
    unique_index=("tenant_id", "location_id", "item_id", "sales_day"),
    indexes=(("tenant_id", "sales_day"),),
    sources=("rest.orders", "rest.order_items"),
    # Popularity and prices move within a service: every 30 minutes, or sooner when
    # 500 order changes arrived, and never older than an hour.
    refresh=RefreshPolicy(
        cron="*/30 * * * *", max_staleness=3600.0, min_changes=500, concurrently=True
    ),
    # Menus carry this tag too: their prices and popularity come from this view.
    tags=(TAG_ITEM_SALES,),
)

TABLE_TURNOVER_VIEW = MaterializedView(
    "rest.table_turnover",
    query("mv_table_turnover"),
    unique_index=("tenant_id", "location_id", "day"),
    sources=("rest.reservations", "rest.dining_tables"),
    refresh=RefreshPolicy(
        cron="0 * * * *", max_staleness=2 * 3600.0, min_changes=200, concurrently=True
    ),
    tags=(TAG_TURNOVER,),
)

#: Every view, in creation order.
ALL_VIEWS: tuple[MaterializedView, ...] = (ITEM_SALES_DAILY_VIEW, TABLE_TURNOVER_VIEW)
