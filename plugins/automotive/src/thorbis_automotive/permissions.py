"""The permission names the vertical introduces (the core's permission service assigns
them bits). Stock adjustments and purchase orders are split from reading inventory:
a counter clerk reads stock, only a parts manager corrects it."""

from __future__ import annotations

from thorbis_cache.plugins.declarations import Permission

__all__ = ["ALL_PERMISSIONS"]

ALL_PERMISSIONS: tuple[Permission, ...] = (
    Permission("auto.vehicles.read", "view vehicles, service histories and schedules"),
    Permission("auto.vehicles.write", "register and edit vehicles"),
    Permission("auto.repair_orders.read", "view repair orders"),
    Permission("auto.repair_orders.write", "open, update and complete repair orders"),
    Permission("auto.parts.read", "view parts, stock levels and reorder points"),
    Permission("auto.parts.issue", "issue parts to repair orders and take returns"),
    Permission("auto.parts.adjust", "receive deliveries and correct stock counts"),
    Permission("auto.labor.read", "view labor estimates"),
    Permission("auto.labor.manage", "edit service types, intervals and labor rates"),
    Permission("auto.reports.read", "view parts demand and bay utilisation reports"),
    Permission("auto.admin", "administer the automotive vertical of a tenant"),
)
