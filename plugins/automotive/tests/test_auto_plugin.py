"""The plugin module: every hook is implemented, names are in the ``auto`` namespace,
the plugin loads alone (``PluginManager().load(["automotive"])``,
``CacheApp(...).start(["automotive"])``), and beside home_services on one tenant no key,
tag or SQL schema collides."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pluggy
import pytest
from hypothesis import given
from thorbis_cache import CacheApp, KeyRing, hookspecs
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.testing.strategies import params_for, tenant_ids

import thorbis_automotive
from thorbis_automotive import plugin
from thorbis_automotive.demo import DEMO
from thorbis_automotive.schemas import ALL_SCHEMAS, TAGS

HOOKS = {
    "register_plugin_info", "register_key_schemas", "register_cache_patterns", "register_sql",
    "register_materialized_views", "register_invalidation_rules", "register_warmers",
    "register_permissions",
}


def test_the_entry_point_names_the_plugin_module() -> None:
    found = [ep for ep in entry_points(group="thorbis_cache.plugins") if ep.name == "automotive"]
    assert len(found) == 1
    assert found[0].load() is plugin
    assert found[0].dist is not None
    assert found[0].dist.version == thorbis_automotive.__version__


def test_every_hook_is_implemented_and_registers_with_pluggy() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name="automotive")
    manager.check_pending()
    assert {h.name for h in manager.get_hookcallers(plugin) or []} == HOOKS


def test_declarations_are_unique_and_namespaced() -> None:
    info = plugin.register_plugin_info()
    assert info.problems() == []
    assert info.namespace == "auto"
    for hook in HOOKS - {"register_plugin_info"}:
        declared: list[Any] = list(getattr(plugin, hook)())
        names = [d.name for d in declared]
        assert declared, hook
        assert len(set(names)) == len(names), hook
        assert all(n.startswith("auto.") for n in names), hook


def test_views_have_schedules_sources_and_carried_tags() -> None:
    for view in plugin.register_materialized_views():
        assert view.refresh.concurrently
        assert view.refresh.cron
        assert view.unique_index[0] == "tenant_id"
        assert view.sources
        assert all(s.split(".")[1] in view.query for s in view.sources)
        assert view.tags
        assert set(view.tags) <= TAGS


async def test_loads_alone() -> None:
    manager = PluginManager()
    loaded = await manager.load(["automotive"])
    assert [p.name for p in loaded] == ["automotive"]
    assert set(manager.plugins) == {"automotive"}


async def test_cache_app_starts_with_only_automotive(thorbis_standalone_redis_url: str) -> None:
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate()).start(
        ["automotive"])
    async with app:
        assert set(app.plugins.plugins) == {"automotive"}
        assert await app.pattern("auto.low_stock")("acme") == []
        assert await app.pattern("auto.vehicle_history")("acme", vin="1M8GDM9AXKP042788") is None


async def test_beside_home_services_nothing_collides() -> None:
    pytest.importorskip("thorbis_home_services")
    manager = PluginManager()
    await manager.load(["automotive", "home_services"])
    auto, hs = manager.plugins["automotive"], manager.plugins["home_services"]
    assert auto.info.namespace != hs.info.namespace
    assert not {s.name for s in auto.schemas} & {s.name for s in hs.schemas}
    assert {v.schema for v in auto.views} == {"auto"}


@given(tenant_ids(), params_for(ALL_SCHEMAS[0]))
def test_keys_stay_in_the_namespace_and_the_tenant_slot(tenant: str, params: dict[str, Any]
                                                        ) -> None:
    body = ALL_SCHEMAS[0].key(tenant, **params).body
    assert body.startswith("{" + tenant + "}:auto.vehicle_history:")


def test_demo_object() -> None:
    from thorbis_cache.demo.protocol import VerticalDemo

    assert isinstance(DEMO, VerticalDemo)
    assert (DEMO.plugin, DEMO.title) == ("automotive", "Automotive")
