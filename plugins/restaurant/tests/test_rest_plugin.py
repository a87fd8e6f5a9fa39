"""The plugin as a host sees it: the entry point, every hook, names in the ``rest``
namespace, loading it alone, and living beside another vertical on one tenant."""

from __future__ import annotations

import datetime as dt
from importlib.metadata import entry_points
from typing import Any

import pluggy
import pytest
from thorbis_cache import CacheApp, KeyRing, hookspecs
from thorbis_cache.cache.keys import KeySchema
from thorbis_cache.demo.protocol import VerticalDemo
from thorbis_cache.plugins.declarations import (
    CachePattern,
    InvalidationRule,
    MaterializedView,
    Permission,
    PluginInfo,
    SqlScript,
    Warmer,
)
from thorbis_cache.plugins.manager import PluginManager

import thorbis_restaurant
from thorbis_restaurant import demo, plugin
from thorbis_restaurant.models import Menu
from thorbis_restaurant.schemas import MENU, TAG_MENUS

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
    found = [ep for ep in entry_points(group="thorbis_cache.plugins") if ep.name == "restaurant"]
    assert len(found) == 1
    assert found[0].load() is plugin
    assert found[0].dist is not None
    assert found[0].dist.name == "thorbis-restaurant"
    assert found[0].dist.version == thorbis_restaurant.__version__


def test_every_hook_is_implemented_and_registers_with_pluggy() -> None:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name="restaurant")
    manager.check_pending()
    assert {h.name for h in manager.get_hookcallers(plugin) or []} == set(EXPECTED)


def test_plugin_info_and_namespaced_declarations() -> None:
    info = plugin.register_plugin_info()
    assert isinstance(info, PluginInfo)
    assert info.problems() == []
    assert info.namespace == "rest"
    assert info.title == "Restaurant"
    assert info.hook_api_version in hookspecs.SUPPORTED_HOOK_API_VERSIONS
    for hook, kind in EXPECTED.items():
        if kind is None:
            continue
        declared: list[Any] = list(getattr(plugin, hook)())
        assert declared, hook
        assert all(isinstance(d, kind) for d in declared), hook
        names = [d.name for d in declared]
        assert len(set(names)) == len(names)
        assert all(n.startswith("rest.") for n in names)


def test_views_refresh_concurrently_on_a_schedule_from_own_tables() -> None:
    views = plugin.register_materialized_views()
    assert len(views) >= 2
    for view in views:
        assert view.refresh.concurrently
        assert view.refresh.cron
        assert view.unique_index[0] == "tenant_id"
        assert view.sources
        assert all(s.startswith("rest.") for s in view.sources)
        assert all(s.split(".")[1] in view.query for s in view.sources), view.name
        assert view.tags


def test_the_demo_object_satisfies_the_protocol() -> None:
    assert isinstance(demo.DEMO, VerticalDemo)
    assert (demo.DEMO.plugin, demo.DEMO.title) == ("restaurant", "Restaurant")


async def test_loads_alone() -> None:
    manager = PluginManager()
    loaded = await manager.load(["restaurant"])
    assert [p.name for p in loaded] == ["restaurant"]
    assert list(manager.plugins) == ["restaurant"]
    assert {s.name for s in manager.registry} == {s.name for s in plugin.register_key_schemas()}


async def test_app_starts_with_restaurant_only(thorbis_standalone_redis_url: str) -> None:
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate()).start(
        ["restaurant"])
    async with app:
        assert list(app.plugins.plugins) == ["restaurant"]
        assert await app.pattern("rest.location_menus")("acme", location_id=1) == []


async def test_beside_another_vertical_on_one_tenant(thorbis_standalone_redis_url: str) -> None:
    others = sorted(ep.name for ep in entry_points(group="thorbis_cache.plugins")
                    if ep.name != "restaurant")
    if not others:
        pytest.skip("no other vertical installed")
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate()).start(
        ["restaurant", *others])
    async with app:
        ours = {s.name for s in plugin.register_key_schemas()}
        theirs = [s for s in app.plugins.registry if s.name not in ours]
        assert theirs
        assert all(not s.name.startswith("rest.") for s in theirs)
        menu = Menu(1, 1, "Lunch", [], [], dt.date(2024, 1, 1))
        key = MENU.key("acme", menu_id=1)
        await app.cache.set(key, menu)
        # Another vertical's tags never reach our keys, and ours never reach theirs.
        their_tags = {t for s in theirs for t in s.tags}
        assert their_tags
        assert not their_tags & {t for s in app.plugins.registry
                                                 if s.name in ours for t in s.tags}
        await app.cache.invalidate_tags("acme", sorted(their_tags))
        assert await app.cache.get(key) == menu
        await app.cache.invalidate_tags("acme", [TAG_MENUS])
        assert await app.cache.get(key) is None
