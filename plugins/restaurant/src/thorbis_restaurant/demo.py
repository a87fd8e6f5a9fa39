"""The restaurant vertical's part in ``thorbis-cache demo``: :data:`DEMO`.

* :meth:`RestaurantDemo.populate` loads :mod:`thorbis_restaurant.datagen` (``scale`` is
  locations per tenant);
* :meth:`RestaurantDemo.read` is one cached read a host makes, always through the cache
  with the plugin's loaders on a miss: a menu (most often, ``get_or_load``), a menu
  category's items (a sorted set, through the ``rest.category_items`` pattern given
  ``fetch``), a day's table grid (a hash, ``get_or_load`` of the hash), or an item's
  sales (``get_or_load``, from the view);
* :meth:`RestaurantDemo.change` caches a menu, then commits a price change of one of its
  items -- which the ``rest.menu_on_entry_change`` rule turns into the invalidation of
  exactly the menus listing the item -- and returns a check that re-reads the menu
  through the cache and compares the item's price with PostgreSQL.

Every location has menus ``2l - 1`` (lunch) and ``2l`` (dinner); location 1 exists at
every scale, so reads need no query to find something to read.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from thorbis_cache.demo.protocol import DemoChange

from thorbis_restaurant import datagen, loaders, patterns
from thorbis_restaurant.models import Menu
from thorbis_restaurant.schemas import ITEM_SALES, MENU, MENU_CATEGORY, TABLE_AVAILABILITY

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp

__all__ = ["DEMO", "RestaurantDemo"]

_STEP = decimal.Decimal("0.25")


async def _menu(app: CacheApp, conn: Any, tenant: str, menu_id: int) -> Menu:
    return await app.cache.get_or_load(
        MENU.key(tenant, menu_id=menu_id), lambda: loaders.menu(conn.fetch, tenant, menu_id))


class RestaurantDemo:
    """The restaurant's :class:`~thorbis_cache.demo.protocol.VerticalDemo`."""

    plugin = "restaurant"
    title = "Restaurant"

    async def populate(self, conn: Any, tenants: Sequence[str], *, seed: int,
                       scale: int) -> int:
        """Load the data set, ``scale`` locations per tenant; returns rows written."""
        data = await datagen.load(conn, tenants, max(1, scale), seed=seed)
        return data.total

    async def read(self, app: CacheApp, conn: Any, tenant: str, rng: random.Random) -> str:
        """One read through the cache (a menu 60%, a menu category 10%, a table grid
        20%, an item's sales 10%)."""
        roll = rng.random()
        if roll < 0.6:
            await _menu(app, conn, tenant, rng.choice((1, 2)))
            return MENU.name
        if roll < 0.7:
            await patterns.category_items(app.cache, tenant, menu_id=rng.choice((1, 2)),
                                          category=rng.choice(datagen.CATEGORIES),
                                          fetch=conn.fetch)
            return MENU_CATEGORY.name
        if roll < 0.9:
            day = loaders.utc_today() + dt.timedelta(days=rng.randint(0, 6))
            await app.cache.hash(TABLE_AVAILABILITY.key(tenant, location_id=1, day=day)) \
                .get_or_load(lambda: loaders.table_availability(conn.fetch, tenant, 1, day))
            return TABLE_AVAILABILITY.name
        item_id = rng.randint(1, datagen.CATALOGUE_SIZE)
        await app.cache.get_or_load(
            ITEM_SALES.key(tenant, location_id=1, item_id=item_id),
            lambda: loaders.item_sales(conn.fetch, tenant, 1, item_id))
        return ITEM_SALES.name

    async def change(self, app: CacheApp, conn: Any, tenant: str,
                     rng: random.Random) -> DemoChange:
        """Cache a menu, commit a price change of one of its items, and return the check."""
        menu_id = rng.choice((1, 2))
        menu = await _menu(app, conn, tenant, menu_id)
        line = rng.choice(menu.lines)
        old: decimal.Decimal = await conn.fetchval(
            "SELECT base_price FROM rest.menu_items WHERE tenant_id = $1 AND id = $2",
            tenant, line.item_id)
        new = old + _STEP if old <= _STEP or rng.random() < 0.5 else old - _STEP
        await conn.execute(
            "UPDATE rest.menu_items SET base_price = $3, updated_at = now() "
            "WHERE tenant_id = $1 AND id = $2", tenant, line.item_id, new)

        async def verify() -> str | None:
            cached = (await _menu(app, conn, tenant, menu_id)).line(line.item_id)
            stored: decimal.Decimal = await conn.fetchval(
                "SELECT base_price FROM rest.menu_items WHERE tenant_id = $1 AND id = $2",
                tenant, line.item_id)
            if cached is None:
                return f"menu {menu_id} no longer lists item {line.item_id}"
            if cached.base_price != stored:
                return (f"menu {menu_id} item {line.item_id}: cache shows "
                        f"{cached.base_price}, database has {stored}")
            return None

        return DemoChange(f"item {line.item_id} price {old} -> {new} (menu {menu_id} cached)",
                          verify)


#: The object ``thorbis-cache demo`` finds through the plugin's entry point.
DEMO = RestaurantDemo()
