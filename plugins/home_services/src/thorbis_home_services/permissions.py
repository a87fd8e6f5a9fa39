"""The permission names the vertical introduces.

The seed's bitmap names (``read_customers``, ``write_work_orders``...) become namespaced
names; the core's permission service assigns them bits. ``hs.work_orders.assign`` and
``hs.schedules.manage`` split dispatching from editing, which the seed's coarse
``write_work_orders`` could not.
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import Permission

__all__ = ["ALL_PERMISSIONS"]

ALL_PERMISSIONS: tuple[Permission, ...] = (
    Permission("hs.customers.read", "view customers, their lists and summaries"),
    Permission("hs.customers.write", "create and edit customers"),
    Permission("hs.work_orders.read", "view work orders and status boards"),
    Permission("hs.work_orders.write", "create and edit work orders"),
    Permission("hs.work_orders.assign", "assign work orders to technicians (dispatch)"),
    Permission("hs.schedules.read", "view technician schedules and appointment maps"),
    Permission("hs.schedules.manage", "reschedule appointments and reorder routes"),
    Permission("hs.invoices.read", "view invoices"),
    Permission("hs.invoices.write", "create, send and void invoices"),
    Permission("hs.inspections.write", "record quality-control inspections"),
    Permission("hs.reports.read", "view financial, technician and service-area reports"),
    Permission("hs.service_areas.manage", "edit service areas and their boundaries"),
    Permission("hs.admin", "administer the home-services vertical of a tenant"),
)
