"""The home-services plugin: the hook implementations thorbis-cache calls.

Found through the entry point ``home_services = "thorbis_home_services.plugin"`` in the
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

from thorbis_home_services.patterns import PATTERNS
from thorbis_home_services.permissions import ALL_PERMISSIONS
from thorbis_home_services.rules import ALL_RULES
from thorbis_home_services.schemas import ALL_SCHEMAS
from thorbis_home_services.sqlfiles import script
from thorbis_home_services.views import ALL_VIEWS
from thorbis_home_services.warmers import default_warmers

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

NAMESPACE = "hs"


@hookimpl
def register_plugin_info() -> PluginInfo:
    """Home services: namespace ``hs``, hook API 1."""
    return PluginInfo(
        namespace=NAMESPACE,
        hook_api_version=1,
        title="Home services",
        description="customers, work orders by priority, technician schedules with geo, "
        "service history, service-area metrics",
    )


@hookimpl
def register_key_schemas() -> Sequence[KeySchema[Any]]:
    """The twelve ``hs.*`` key schemas (:mod:`thorbis_home_services.schemas`)."""
    return ALL_SCHEMAS


@hookimpl
def register_cache_patterns() -> Sequence[CachePattern]:
    """The named reads (:mod:`thorbis_home_services.patterns`)."""
    return PATTERNS


@hookimpl
def register_sql() -> Sequence[SqlScript]:
    """The ``hs`` schema, its tables and indexes (``sql/tables.sql``, idempotent)."""
    return [SqlScript("hs.tables", script("tables"))]


@hookimpl
def register_materialized_views() -> Sequence[MaterializedView]:
    """The four views: customer summary, financial daily, technician performance and
    service-area metrics (:mod:`thorbis_home_services.views`)."""
    return ALL_VIEWS


@hookimpl
def register_invalidation_rules() -> Sequence[InvalidationRule]:
    """The table rules (:mod:`thorbis_home_services.rules`)."""
    return ALL_RULES


@hookimpl
def register_warmers() -> Sequence[Warmer]:
    """Customers, open work orders, today's schedules, service areas
    (:mod:`thorbis_home_services.warmers`)."""
    return default_warmers()


@hookimpl
def register_permissions() -> Sequence[Permission]:
    """The ``hs.*`` permission names (:mod:`thorbis_home_services.permissions`)."""
    return ALL_PERMISSIONS
