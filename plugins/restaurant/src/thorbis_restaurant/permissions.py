"""The permission names the vertical introduces.

Pricing is split from menu editing (a manager sets prices; staff edit descriptions), and
bumping kitchen orders from reading the display.
"""

from __future__ import annotations

from thorbis_cache.plugins.declarations import Permission

__all__ = ["ALL_PERMISSIONS"]

ALL_PERMISSIONS: tuple[Permission, ...] = (
    Permission("rest.menus.read", "view menus, items and category lists"),
    Permission("rest.menus.write", "edit menus and catalogue items"),
    Permission("rest.pricing.manage", "change item prices and dynamic-pricing settings"),
    Permission("rest.reservations.read", "view table availability and reservations"),
    Permission("rest.reservations.write", "book, move and cancel reservations"),
    Permission("rest.kitchen.read", "view the kitchen display"),
    Permission("rest.kitchen.bump", "bump and complete kitchen orders"),
    Permission("rest.reports.read", "view item sales and table turnover reports"),
    Permission("rest.admin", "administer the restaurant vertical of a tenant"),
)
