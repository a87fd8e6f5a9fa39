"""The restaurant plugin: the hook implementations thorbis-cache calls.

Found through the entry point ``restaurant = "thorbis_restaurant.plugin"`` in the
``thorbis_cache.plugins.manager`` group. Each hook returns declarations built in the module that
owns the concept; nothing here connects, reads the environment or runs at import beyond
building those constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thorbis_cache.cache.keys import KeySchema
from thorbis_cache.plugins.declarations import (
    CachePattern,
    InvalidationRule,
    MaterializedView,
    Permission,
    PluginInfo,
    SqlScript,
    Warmer,
)
from thorbis_cache.plugins.hookspecs import hookimpl

from thorbis_restaurant.patterns import PATTERNS
from thorbis_restaurant.permissions import ALL_PERMISSIONS
from thorbis_restaurant.rules import ALL_RULES
from thorbis_restaurant.schemas import ALL_SCHEMAS
from thorbis_restaurant.sqlfiles import script
from thorbis_restaurant.views import ALL_VIEWS
from thorbis_restaurant.warmers import default_warmers

__all__ = [
    "NAMESPACE",
    "register_cache_patterns",
    "register_invalidation_rules",
    "register_key_schemas",
    "register_materialized_views",
    "register_permissions",
    "register_plugin_info",
    "register_sql",
    "register_warmers",
]

NAMESPACE = "rest"


@hookimpl
def register_plugin_info() -> PluginInfo:
    """Restaurant: namespace ``rest``, hook API 1."""
    return PluginInfo(
        namespace=NAMESPACE,
        hook_api_version=1,
        title="Restaurant",
        description="menus with item-exact price invalidation, table availability, "
        "kitchen queues by priority, popularity and dynamic pricing",
    )


@hookimpl
def register_key_schemas() -> Sequence[KeySchema[Any]]:
    """The ``rest.*`` key schemas (:mod:`thorbis_restaurant.schemas`)."""
    return ALL_SCHEMAS


@hookimpl
def register_cache_patterns() -> Sequence[CachePattern]:
    """The named reads (:mod:`thorbis_restaurant.patterns`)."""
    return PATTERNS


@hookimpl
def register_sql() -> Sequence[SqlScript]:
    """The ``rest`` schema, tables, indexes and copy triggers (``sql/tables.sql``)."""
    return [SqlScript("rest.tables", script("tables"))]


@hookimpl
def register_materialized_views() -> Sequence[MaterializedView]:
    """Item sales per day and table turnover (:mod:`thorbis_restaurant.views`)."""
    return ALL_VIEWS


@hookimpl
def register_invalidation_rules() -> Sequence[InvalidationRule]:
    """The table rules (:mod:`thorbis_restaurant.rules`)."""
    return ALL_RULES


@hookimpl
def register_warmers() -> Sequence[Warmer]:
    """Menus, today's table grids, the kitchen display (:mod:`thorbis_restaurant.warmers`)."""
    return default_warmers()


@hookimpl
def register_permissions() -> Sequence[Permission]:
    """The ``rest.*`` permission names (:mod:`thorbis_restaurant.permissions`)."""
    return ALL_PERMISSIONS
