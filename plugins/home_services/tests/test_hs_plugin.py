"""The plugin module: every hook is implemented, returns declarations of the right
types, and every name is in the ``hs`` namespace."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pluggy
from thorbis_cache.cache.keys import KeySchema
from thorbis_cache.plugins import hookspecs
from thorbis_cache.plugins.declarations import (
    CachePattern,
    InvalidationRule,
    MaterializedView,
    Permission,
    PluginInfo,
    SqlScript,
    Warmer,
)

import thorbis_home_services
from thorbis_home_services import plugin

EXPECTED = {
    "register_plugin_info": None,
    "register_key_schemas": KeySchema,
    "register_cache_patterns": CachePattern,
    "register_sql": SqlScript,
    "register_materialized_views": MaterializedView,
    "register_invalidation_rules": InvalidationRule,
    "register_warmers": Warmer,
    "register_permissions": Permission,
}


def test_the_entry_point_names_the_plugin_module() -> None:
    found = [ep for ep in entry_points(group="thorbis_cache.plugins")
             if ep.name == "home_services"]
    assert len(found) == 1
    assert found[0].load() is plugin
    assert found[0].dist is not None
    assert found[0].dist.version == thorbis_home_services.__version__


def test_every_hook_is_implemented_and_registers_with_pluggy() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name="home_services")
    manager.check_pending()  # no implementation without a spec
    implemented = {h.name for h in manager.get_hookcallers(plugin) or []}
    assert implemented == set(EXPECTED)


def test_plugin_info() -> None:
    info = plugin.register_plugin_info()
    assert isinstance(info, PluginInfo)
    assert info.problems() == []
    assert info.namespace == "hs"
    assert info.hook_api_version in hookspecs.SUPPORTED_HOOK_API_VERSIONS


def test_declarations_are_typed_unique_and_namespaced() -> None:
    for hook, kind in EXPECTED.items():
        if kind is None:
            continue
        declared: list[Any] = list(getattr(plugin, hook)())
        assert declared, hook
        assert all(isinstance(d, kind) for d in declared), hook
        names = [d.name for d in declared]
        assert len(set(names)) == len(names), hook
        assert all(n.startswith("hs.") for n in names), hook


def test_patterns_and_warmers_name_declared_schemas() -> None:
    schemas = {s.name for s in plugin.register_key_schemas()}
    for item in [*plugin.register_cache_patterns(), *plugin.register_warmers()]:
        assert item.schemas, item.name
        assert set(item.schemas) <= schemas, item.name


def test_views_read_the_plugins_tables_and_refresh_concurrently() -> None:
    for view in plugin.register_materialized_views():
        assert view.refresh.concurrently
        assert view.unique_index
        assert view.refresh.cron
        assert view.unique_index[0] == "tenant_id"
        assert view.sources
        assert all(s.startswith("hs.") for s in view.sources)
        assert all(s.split(".")[1] in view.query for s in view.sources), view.name
    crons = {v.name: v.refresh.cron for v in plugin.register_materialized_views()}
    # The seed's pg_cron schedule.
    assert crons == {
        "hs.customer_summary": "*/15 * * * *",
        "hs.financial_daily": "0 1 * * *",
        "hs.technician_performance": "0 */4 * * *",
        "hs.service_area_metrics": "0 2 * * *",
    }
