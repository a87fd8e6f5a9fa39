"""The hook implementations: what thorbis-cache loads through the entry point
``automotive = "thorbis_automotive.plugin"``. Each hook returns declarations from the
module that owns them; nothing here connects or computes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thorbis_cache import hookimpl
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

from thorbis_automotive.patterns import PATTERNS
from thorbis_automotive.permissions import ALL_PERMISSIONS
from thorbis_automotive.rules import ALL_RULES
from thorbis_automotive.schemas import ALL_SCHEMAS
from thorbis_automotive.sqlfiles import script
from thorbis_automotive.views import ALL_VIEWS
from thorbis_automotive.warmers import default_warmers

__all__ = [
    "register_cache_patterns",
    "register_invalidation_rules",
    "register_key_schemas",
    "register_materialized_views",
    "register_permissions",
    "register_plugin_info",
    "register_sql",
    "register_warmers",
]


@hookimpl
def register_plugin_info() -> PluginInfo:
    """Namespace ``auto`` (also the PostgreSQL schema), hook API version 1."""
    return PluginInfo(
        namespace="auto",
        hook_api_version=1,
        title="Automotive",
        description="vehicle histories by VIN, parts inventory with reorder points, "
        "seasonal labor estimates",
    )


@hookimpl
def register_key_schemas() -> Sequence[KeySchema[Any]]:
    """The ``auto.*`` key schemas (:mod:`thorbis_automotive.schemas`)."""
    return ALL_SCHEMAS


@hookimpl
def register_cache_patterns() -> Sequence[CachePattern]:
    """History, schedule, make/model, low stock, part, demand, labor and bay reads,
    each cache-only or read-through with ``fetch`` (:mod:`thorbis_automotive.patterns`)."""
    return PATTERNS


@hookimpl
def register_sql() -> Sequence[SqlScript]:
    """The ``auto`` schema, its tables, VIN check and stock ledger trigger
    (``sql/tables.sql``, idempotent)."""
    return [SqlScript("auto.tables", script("tables"))]


@hookimpl
def register_materialized_views() -> Sequence[MaterializedView]:
    """Parts demand per week, labor per month, bay utilisation per day
    (:mod:`thorbis_automotive.views`)."""
    return ALL_VIEWS


@hookimpl
def register_invalidation_rules() -> Sequence[InvalidationRule]:
    """The table rules (:mod:`thorbis_automotive.rules`)."""
    return ALL_RULES


@hookimpl
def register_warmers() -> Sequence[Warmer]:
    """Recent vehicles and make/model sets, parts and stock sets, service types and
    their seasonal labor factors (:mod:`thorbis_automotive.warmers`)."""
    return default_warmers()


@hookimpl
def register_permissions() -> Sequence[Permission]:
    """The ``auto.*`` permission names (:mod:`thorbis_automotive.permissions`)."""
    return ALL_PERMISSIONS
