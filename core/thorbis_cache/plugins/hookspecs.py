"""The hooks a thorbis-cache plugin implements: the reference for plugin authors.

A plugin is a module or object with functions decorated by ``@thorbis_cache.hookimpl``
and named like the hooks below. It is found through the entry-point group
``thorbis_cache.plugins`` (or registered in-process with ``CacheApp.register``).

Rules shared by every hook:

* Hooks are called with keyword arguments only, so a hook can gain an argument in a later
  API version without breaking plugins that do not take it.
* A ``register_*`` hook returns declarations -- a value, a zero-argument callable
  returning the value, or an awaitable of it; the framework resolves all three. The
  results of several plugins are kept apart, attributed to their plugin, validated,
  and stored only when every check of every hook of that plugin passed.
* An ``on_*`` hook is a notification: its return value (None, or an awaitable) is awaited
  and discarded.
* Every hook call, awaiting included, is bounded by ``PluginManager(hook_timeout=...)``
  (default 5 s): a hook that overruns fails the load or start, naming plugin and hook,
  and nothing of that load is kept. An exception a hook raises is the ``__cause__`` of
  the :class:`~thorbis_cache.errors.PluginLoadError` that reports it.
* Every name a plugin declares starts with its namespace (``hs.customer``), which
  :func:`register_plugin_info` declares.

Hook API version: :data:`HOOK_API_VERSION`. A plugin states the version it targets in
:class:`~thorbis_cache.plugins.declarations.PluginInfo`; a version outside
:data:`SUPPORTED_HOOK_API_VERSIONS` is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
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

__all__ = [
    "HOOK_API_VERSION",
    "PROJECT",
    "SUPPORTED_HOOK_API_VERSIONS",
    "hookimpl",
    "hookspec",
]

PROJECT = "thorbis_cache"
#: The version of this hook API.
HOOK_API_VERSION = 1
#: Versions of the hook API this release can load.
SUPPORTED_HOOK_API_VERSIONS = frozenset({1})

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- identity


@hookspec
def register_plugin_info() -> PluginInfo:  # type: ignore[empty-body]
    """Declare who the plugin is: its namespace and the hook API version it targets.

    Called first when the plugin is loaded. Required: a plugin without it is refused.

    :returns: a :class:`~thorbis_cache.plugins.declarations.PluginInfo`.

    Example::

        @hookimpl
        def register_plugin_info():
            return PluginInfo(namespace="hs", hook_api_version=1, title="Home services")

    .. versionadded:: 1
    """


# --------------------------------------------------------------------------- cache


@hookspec
def register_key_schemas() -> Sequence[KeySchema[Any]]:  # type: ignore[empty-body]
    """Declare the key schemas of the plugin.

    Called once at load, after :func:`register_plugin_info`. Every schema name must
    start with the plugin's namespace; a name another plugin already holds is refused
    naming both plugins.

    :returns: a sequence of :class:`~thorbis_cache.cache.keys.KeySchema`.

    Example::

        @hookimpl
        def register_key_schemas():
            return [KeySchema("hs.customer", Customer, params={"customer_id": int},
                              kind=SchemaKind.HASH, sensitive=True)]

    .. versionadded:: 1
    """


@hookspec
def register_cache_patterns() -> Sequence[CachePattern]:  # type: ignore[empty-body]
    """Declare named reads the vertical offers ("work orders by priority").

    Called once at load. Pattern names start with the namespace; ``schemas`` must name
    schemas of this plugin. The host calls them through ``CacheApp.pattern(name)``. By
    convention a pattern takes an optional ``fetch`` keyword (``async (sql, *args) ->
    rows``, e.g. a pool's ``fetch``): with it, it reads through the cache (fill leases,
    the plugin's loaders); without it, it answers from what is cached.

    :returns: a sequence of :class:`~thorbis_cache.plugins.declarations.CachePattern`.

    Example::

        @hookimpl
        def register_cache_patterns():
            return [CachePattern("hs.high_priority", high_priority,
                                 schemas=["hs.work_orders_by_status"])]

    .. versionadded:: 1
    """


# --------------------------------------------------------------------------- PostgreSQL


@hookspec
def register_sql() -> Sequence[SqlScript]:  # type: ignore[empty-body]
    """Declare the SQL the plugin needs: its schema, tables, indexes, functions.

    Called once at load. Scripts must be idempotent; they are applied in order, after
    the core SQL and before the plugin's materialized views, by ``thorbis-cache db
    init``. A failing statement is reported with the script, the statement and
    PostgreSQL's message, and nothing of the plugin is kept.

    :returns: a sequence of :class:`~thorbis_cache.plugins.declarations.SqlScript`.

    Example::

        @hookimpl
        def register_sql():
            return [SqlScript("hs.tables", files("home_services").joinpath("tables.sql")
                              .read_text())]

    .. versionadded:: 1
    """


@hookspec
def register_materialized_views() -> Sequence[MaterializedView]:  # type: ignore[empty-body]
    """Declare the plugin's materialized views and how they are refreshed.

    Called once at load. A view that asks for concurrent refresh must declare a unique
    index (checked at load and by the contract kit against the real database).

    :returns: a sequence of :class:`~thorbis_cache.plugins.declarations.MaterializedView`.

    Example::

        @hookimpl
        def register_materialized_views():
            return [MaterializedView("hs.customer_summary", SUMMARY_SQL,
                                     unique_index=["tenant_id", "customer_id"],
                                     refresh=RefreshPolicy(cron="*/5 * * * *"))]

    .. versionadded:: 1
    """


@hookspec
def register_invalidation_rules() -> Sequence[InvalidationRule]:  # type: ignore[empty-body]
    """Declare which cache entries a change to a table makes stale.

    Called once at load. Tables and columns are checked against the database when SQL
    is applied; schemas and tags must be declared by this plugin.

    :returns: a sequence of :class:`~thorbis_cache.plugins.declarations.InvalidationRule`.

    Example::

        @hookimpl
        def register_invalidation_rules():
            return [InvalidationRule(
                "hs.customer_lists", table="hs.customers", operations=["UPDATE"],
                significant_columns=["account_status", "payment_status", "customer_type"],
                targets=[RuleTarget(tag="hs.customer_lists")])]

    .. versionadded:: 1
    """


# --------------------------------------------------------------------------- services


@hookspec
def register_warmers() -> Sequence[Warmer]:  # type: ignore[empty-body]
    """Declare warmers: functions that fill a tenant's cache ahead of demand.

    Called once at load; a warmer runs when the host or the worker warms a tenant, and
    may only produce keys of the plugin's own namespace. It yields
    :class:`~thorbis_cache.warming.WarmBatch` es (keys, and a loader of their entries)
    that :func:`thorbis_cache.warming.warm` fills under fill leases taken before the
    loader reads the database.

    :returns: a sequence of :class:`~thorbis_cache.plugins.declarations.Warmer`.

    .. versionadded:: 1
    """


@hookspec
def register_permissions() -> Sequence[Permission]:  # type: ignore[empty-body]
    """Declare permission names the plugin introduces (``hs.work_orders.assign``).

    Called once at load. Names start with the namespace and are unique across plugins.

    :returns: a sequence of :class:`~thorbis_cache.plugins.declarations.Permission`.

    .. versionadded:: 1
    """


# --------------------------------------------------------------------------- lifecycle


class StartedApp(Protocol):
    """What ``on_startup`` receives: a started :class:`~thorbis_cache.app.CacheApp`,
    described here as a protocol so that the hook declarations, which the app builds on,
    do not import it."""

    @property
    def cache(self) -> Cache:
        """The app's cache (its ``registry`` holds every plugin's schemas)."""
        ...


@hookspec
def on_startup(app: StartedApp) -> None:
    """Notification: the app has loaded every plugin and connected its cache.

    Called once per :meth:`CacheApp.start`, in plugin registration order, after all
    declarations were validated and stored. May return an awaitable, which is awaited
    (within the hook deadline). An exception here fails the start, naming the plugin;
    the other plugins' ``on_startup`` still run. The contract kit calls it on a started
    app (``test_on_startup_runs_on_a_started_app``).

    :param app: the started application (its cache, registry and declarations).

    .. versionadded:: 1
    """
