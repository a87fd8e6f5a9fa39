"""The plugin manager: discovery, hook calls, validation reported all at once, all or
nothing; and the ``thorbis-cache plugins`` command."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from plugins_fixtures import broken, good
from plugins_fixtures.broken_sql import BadDbReferences, FailingStartup, Hanging
from typer.testing import CliRunner

import thorbis_cache.plugins.manager
from thorbis_cache import (
    CacheApp,
    InvalidationRule,
    KeySchema,
    MaterializedView,
    PluginInfo,
    RuleTarget,
    hookimpl,
)
from thorbis_cache.cli import app as cli_app
from thorbis_cache.errors import (
    ConfigurationError,
    PluginLoadError,
    PluginProblem,
    UnknownPatternError,
)
from thorbis_cache.plugins.manager import ENTRY_POINT_GROUP, PluginManager, await_me_maybe


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    """Replace the installed entry points of the group by this (initially empty) list."""
    eps: list[EntryPoint] = []

    def fake(*, group: str) -> list[EntryPoint]:
        return list(eps) if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(thorbis_cache.plugins.manager, "entry_points", fake)
    return eps


def assert_nothing_stored(manager: PluginManager) -> None:
    assert manager.plugins == {}
    assert len(manager.registry) == 0
    assert manager.pluggy_manager.get_plugins() == set()
    assert manager.all_rules() == manager.all_views() == manager.all_sql() == []


def matching(problems: list[PluginProblem], plugin: str, hook: str, text: str) -> bool:
    return any(p.plugin == plugin and p.hook == hook and text in p.message for p in problems)


# --------------------------------------------------------------------------- a good plugin


async def test_good_plugin_is_loaded_with_every_declaration() -> None:
    manager = PluginManager()
    manager.add(good, "tst", distribution="tst-dist", version="1.2")
    [loaded] = await manager.load(["tst"])
    assert loaded.name == "tst"
    assert (loaded.distribution, loaded.version) == ("tst-dist", "1.2")
    assert loaded.info.namespace == "tst"
    assert loaded.schemas == (good.ITEM, good.ITEM_HASH, good.BY_STATUS, good.NEAR)
    # register_cache_patterns returned a callable, register_sql an awaitable: resolved.
    assert [p.name for p in loaded.patterns] == ["tst.item_or_none"]
    assert [s.name for s in loaded.sql] == ["tst.tables"]
    assert loaded.views == (good.COUNTS,)
    assert [r.name for r in loaded.rules] == ["tst.item", "tst.lists"]
    assert [w.name for w in loaded.warmers] == ["tst.items"]
    assert [p.name for p in loaded.permissions] == ["tst.items.read", "tst.items.write"]

    assert manager.plugins == {"tst": loaded}
    assert manager.registry.get("tst.item") is good.ITEM
    assert manager.registry.owner("tst.item") == "tst"
    assert manager.pattern("tst.item_or_none").run is good.item_or_none
    assert manager.all_views() == [good.COUNTS]
    assert manager.all_rules() == list(loaded.rules)
    assert manager.all_sql() == list(loaded.sql)
    assert manager.all_warmers() == list(loaded.warmers)
    assert manager.all_permissions() == list(loaded.permissions)
    assert manager.pluggy_manager.has_plugin("tst")
    # Loading again is a no-op.
    assert await manager.load(["tst"]) == []


async def test_load_all_takes_entry_points_and_added_plugins(
    installed: list[EntryPoint],
) -> None:
    installed.append(entry_point("from_ep", "plugins_fixtures.good"))
    manager = PluginManager()
    assert [ep.name for ep in manager.available()] == ["from_ep"]
    loaded = await manager.load()
    assert [p.name for p in loaded] == ["from_ep"]
    assert loaded[0].schemas[0] is good.ITEM


async def test_unknown_pattern_is_a_key_error_naming_the_declared_ones() -> None:
    manager = PluginManager()
    manager.add(good, "tst")
    await manager.load(["tst"])
    with pytest.raises(UnknownPatternError) as info:
        manager.pattern("tst.nope")
    assert isinstance(info.value, KeyError)
    assert str(info.value) == (
        "cache pattern 'tst.nope' is not declared by any loaded plugin "
        "(declared: tst.item_or_none)"
    )


async def test_unload_forgets_everything_and_requeues_an_added_plugin() -> None:
    manager = PluginManager()
    manager.add(good, "tst")
    await manager.load(["tst"])
    manager.unload("tst")
    assert_nothing_stored(manager)
    with pytest.raises(UnknownPatternError):
        manager.pattern("tst.item_or_none")
    [again] = await manager.load(["tst"])
    assert manager.registry.owner("tst.item") == again.name == "tst"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (lambda: 4, 4)],
    ids=["value", "callable"],
)
async def test_await_me_maybe_resolves_values_and_callables(value: object, expected: int) -> None:
    assert await await_me_maybe(value) == expected


async def test_await_me_maybe_resolves_awaitables() -> None:
    async def five() -> int:
        return 5

    assert await await_me_maybe(five()) == 5
    assert await await_me_maybe(five) == 5  # a callable returning an awaitable


# --------------------------------------------------------------------------- broken plugins


async def test_every_problem_of_every_plugin_is_reported_at_once(
    installed: list[EntryPoint],
) -> None:
    manager = PluginManager()
    manager.add(good, "tst")
    for name, plugin in broken.PLUGINS.items():
        manager.add(plugin, name, distribution=f"dist-{name}", version="0.1")
    manager.add_entry_point(entry_point("ghost", "no_such_module_xyz:plugin"))

    with pytest.raises(PluginLoadError) as info:
        await manager.load()
    problems = info.value.problems
    for name, expected in broken.EXPECTED.items():
        for hook, text in expected:
            assert matching(problems, name, hook, text), (name, hook, text, problems)
    assert matching(problems, "ghost", "import", "cannot import 'no_such_module_xyz:plugin': "
                    "ModuleNotFoundError: No module named 'no_such_module_xyz'")
    # Nothing is wrong with the good plugin, and every broken one is named.
    assert {p.plugin for p in problems} == set(broken.PLUGINS) | {"ghost"}
    assert sum(len(e) for e in broken.EXPECTED.values()) + 1 == len(problems)
    # Each problem names the distribution and version, and all are in the message.
    for problem in problems:
        if problem.plugin != "ghost":
            assert (problem.distribution, problem.version) == (f"dist-{problem.plugin}", "0.1")
            assert f"(dist-{problem.plugin} 0.1)" in str(problem)
        assert str(problem) in str(info.value)
    # All or nothing: not even the good plugin is stored, or left in pluggy.
    assert_nothing_stored(manager)
    # Everything is still queued: the good plugin loads on its own.
    await manager.load(["tst"])
    assert list(manager.plugins) == ["tst"]


@pytest.mark.parametrize("name", sorted(set(broken.PLUGINS) - {"collide_a", "collide_b"}))
async def test_each_defect_alone_gives_exactly_its_clear_error(name: str) -> None:
    manager = PluginManager()
    manager.add(broken.PLUGINS[name], name)
    with pytest.raises(PluginLoadError) as info:
        await manager.load([name])
    problems = info.value.problems
    expected = broken.EXPECTED[name]
    assert len(problems) == len(expected), problems
    for hook, text in expected:
        assert matching(problems, name, hook, text), (hook, text, problems)
    assert_nothing_stored(manager)


async def test_colliding_plugins_are_both_named() -> None:
    manager = PluginManager()
    manager.add(broken.CollideA, "collide_a", distribution="dist-a", version="1")
    manager.add(broken.CollideB, "collide_b", distribution="dist-b", version="2")
    with pytest.raises(PluginLoadError) as info:
        await manager.load()
    text = str(info.value)
    assert ("plugin 'collide_a' (dist-a 1), register_plugin_info: namespace 'col' is also "
            "declared by plugin 'collide_b' (dist-b 2)") in text
    assert ("plugin 'collide_b' (dist-b 2), register_key_schemas: key schema 'col.thing' is "
            "also declared by plugin 'collide_a' (dist-a 1)") in text
    assert_nothing_stored(manager)
    # Each alone is fine.
    await manager.load(["collide_a"])
    assert manager.registry.owner("col.thing") == "collide_a"


class Squatter:
    """Claims the namespace, a schema name and a permission of the good plugin."""

    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="tst", hook_api_version=1)

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("tst.item", str)]

    @hookimpl
    def register_permissions() -> list[Any]:
        return good.register_permissions()


async def test_collision_with_an_already_loaded_plugin_names_it_and_changes_nothing() -> None:
    manager = PluginManager()
    manager.add(good, "tst", distribution="tst-dist", version="1.0")
    await manager.load(["tst"])
    manager.add(Squatter, "squatter")
    with pytest.raises(PluginLoadError) as info:
        await manager.load(["squatter"])
    held = "is already held by plugin 'tst' (tst-dist 1.0)"
    problems = info.value.problems
    assert matching(problems, "squatter", "register_plugin_info", f"namespace 'tst' {held}")
    assert matching(problems, "squatter", "register_key_schemas", "key schema 'tst.item' "
                    "is already held by 'tst'")
    assert matching(problems, "squatter", "register_permissions",
                    f"permission 'tst.items.read' {held}")
    assert list(manager.plugins) == ["tst"]
    assert manager.registry.get("tst.item") is good.ITEM
    assert not manager.pluggy_manager.has_plugin("squatter")


async def test_a_schema_the_host_registered_is_named_as_its_owner() -> None:
    manager = PluginManager()
    manager.registry.register(KeySchema("tst.item", str), owner="host-app")
    manager.add(good, "tst")
    with pytest.raises(PluginLoadError) as info:
        await manager.load(["tst"])
    assert "key schema 'tst.item' is already held by 'host-app'" in str(info.value)
    assert manager.registry.owner("tst.item") == "host-app"
    assert manager.plugins == {}


async def test_entry_points_that_fail_to_import_or_are_not_plugins() -> None:
    manager = PluginManager()
    manager.add_entry_point(entry_point("ghost", "no_such_module_xyz:plugin"))
    manager.add_entry_point(entry_point("attr", "plugins_fixtures.good:no_such_attribute"))
    manager.add_entry_point(entry_point("inert", "plugins_fixtures.broken:NOT_A_PLUGIN"))
    assert {"ghost", "attr", "inert"} <= {ep.name for ep in manager.available()}
    with pytest.raises(PluginLoadError) as info:
        await manager.load(["ghost", "attr", "inert"])
    problems = info.value.problems
    assert matching(problems, "ghost", "import", "ModuleNotFoundError: No module named "
                    "'no_such_module_xyz'")
    assert matching(problems, "attr", "import", "AttributeError")
    assert matching(problems, "inert", "register", "is not a plugin")
    assert len(problems) == 3


async def test_unknown_names_are_problems() -> None:
    manager = PluginManager()
    manager.add(good, "tst")
    with pytest.raises(PluginLoadError) as info:
        await manager.load(["tst", "nope"])
    [problem] = info.value.problems
    assert (problem.plugin, problem.hook) == ("nope", "load")
    assert "no plugin of this name is installed or added" in problem.message
    assert "tst" in problem.message
    assert_nothing_stored(manager)


async def test_two_plugins_of_one_name_are_refused(installed: list[EntryPoint]) -> None:
    installed.append(entry_point("tst", "plugins_fixtures.good"))
    manager = PluginManager()
    manager.add(good, "tst")
    with pytest.raises(PluginLoadError) as info:
        await manager.load()
    assert ("two plugins share this name: entry point 'plugins_fixtures.good' and in-process "
            "object <module 'plugins_fixtures.good'") in str(info.value)


async def test_adding_a_taken_name_fails_at_once() -> None:
    manager = PluginManager()
    manager.add(good, "tst")
    with pytest.raises(PluginLoadError, match="the name is already taken"):
        manager.add(broken.BadViews, "tst")


async def test_pluggy_refusals_become_problems_and_nothing_stays_registered() -> None:
    # pluggy refuses one object under two names; the first registration is undone too.
    manager = PluginManager()
    manager.add(good, "first")
    manager.add(good, "second")
    with pytest.raises(PluginLoadError) as info:
        await manager.load()
    assert matching(info.value.problems, "second", "register", "pluggy refused it: Plugin "
                    "already registered under a different name")
    assert_nothing_stored(manager)


async def test_on_startup_errors_name_the_plugin_and_the_others_still_run() -> None:
    manager = PluginManager()
    manager.add(FailingStartup, "fst")
    manager.add(good, "tst")
    await manager.load()
    good.started.clear()
    app = object()
    with pytest.raises(PluginLoadError) as info:
        await manager.notify_startup(app)  # type: ignore[arg-type]
    [problem] = info.value.problems
    assert (problem.plugin, problem.hook) == ("fst", "on_startup")
    assert problem.message == "raised ConnectionError: warm-up service unreachable"
    assert good.started == [app]


class ViewOwner:
    """Declares a view, and a schema mirroring it with the view's tag: valid."""

    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="vo", hook_api_version=1)

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("vo.counts", int, tags=["vo.reports"], mirrors="vo.counts")]

    @hookimpl
    def register_materialized_views() -> list[MaterializedView]:
        return [MaterializedView("vo.counts", "SELECT 1 AS x", unique_index=["x"],
                                 tags=["vo.reports"])]


class ViewBorrower:
    """Mirrors the view of another plugin, which its refresh tags cannot reach."""

    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="vb", hook_api_version=1)

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("vb.counts", int, tags=["vb.reports"], mirrors="vo.counts")]


class AbsentForever:
    """Caches absences of patients, and no rule drops them on INSERT."""

    @hookimpl
    def register_plugin_info() -> PluginInfo:
        return PluginInfo(namespace="dent", hook_api_version=1)

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        return [KeySchema("dent.patient", str, params={"patient_id": int}, ttl=300,
                          negative_ttl=60, tags=["dent.patients"]),
                KeySchema("dent.chart", str, params={"patient_id": int}, ttl=300,
                          negative_ttl=60, tags=["dent.charts"])]

    @hookimpl
    def register_invalidation_rules() -> list[InvalidationRule]:
        return [InvalidationRule("dent.patient", "dent.patients", ["UPDATE", "DELETE"],
                                 [RuleTarget("dent.patient", {"patient_id": "id"})]),
                # By a tag the chart carries, on INSERT too: fine.
                InvalidationRule("dent.chart", "dent.charts", ["INSERT", "UPDATE"],
                                 [RuleTarget(tag="dent.charts")])]


async def test_a_schema_caching_absences_needs_a_rule_that_fires_on_insert() -> None:
    """Found as a plugin author would: the contract kit passed it, and in a host a
    patient inserted after its absence was cached stayed unseen for negative_ttl."""
    manager = PluginManager()
    manager.add(AbsentForever, "dental", distribution="dist-d", version="1")
    with pytest.raises(PluginLoadError) as info:
        await manager.load(["dental"])
    [problem] = info.value.problems
    assert (problem.plugin, problem.hook) == ("dental", "register_key_schemas")
    assert problem.message.startswith(
        "key schema 'dent.patient' caches absences (negative_ttl=60), and no rule of this "
        "plugin reaches it on INSERT")


async def test_a_schema_mirrors_only_a_view_of_its_own_plugin_sharing_a_tag() -> None:
    manager = PluginManager()
    manager.add(ViewOwner, "owner")
    manager.add(ViewBorrower, "borrower", distribution="dist-b", version="3")
    manager.add(broken.BadMirrors, "bad_mirrors", distribution="dist-m", version="1")
    with pytest.raises(PluginLoadError) as info:
        # In one batch with the owner of vo.counts: still not the borrower's view.
        await manager.load(["owner", "borrower", "bad_mirrors"])
    text = str(info.value)
    assert ("plugin 'borrower' (dist-b 3), register_key_schemas: key schema 'vb.counts' "
            "mirrors 'vo.counts', which is not a materialized view of this plugin "
            "(declared: none)") in text
    assert ("plugin 'bad_mirrors' (dist-m 1), register_key_schemas: key schema 'bm.orphan' "
            "mirrors 'bm.missing', which is not a materialized view of this plugin "
            "(declared: bm.counts)") in text
    assert ("plugin 'bad_mirrors' (dist-m 1), register_key_schemas: key schema 'bm.untagged' "
            "mirrors the view 'bm.counts' but shares none of its tags (bm.reports): the "
            "view's refresh would never drop its entries; add one of them to the schema's "
            "tags") in text
    assert {p.plugin for p in info.value.problems} == {"borrower", "bad_mirrors"}
    assert_nothing_stored(manager)
    # The owner of the view, whose schema shares the view's tag, loads on its own.
    [owner] = await manager.load(["owner"])
    assert owner.schemas[0].mirrors == "vo.counts"


def test_problem_message_names_plugin_distribution_version_and_hook() -> None:
    problem = PluginProblem("p", "register_sql", "boom", "dist", "2.0")
    assert str(problem) == "plugin 'p' (dist 2.0), register_sql: boom"


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_lists_plugins_as_json(installed: list[EntryPoint]) -> None:
    installed.append(entry_point("tst", "plugins_fixtures.good"))
    result = runner.invoke(cli_app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"plugins": [{
        "name": "tst",
        "distribution": None,
        "version": None,
        "namespace": "tst",
        "title": "Test plugin",
        "description": "Everything a plugin can declare, small.",
        "hook_api_version": 1,
        "sql": ["tst.tables"],
        "schemas": ["tst.item", "tst.item_hash", "tst.items_by_status", "tst.items_near"],
        "patterns": ["tst.item_or_none"],
        "materialized_views": ["tst.item_counts"],
        "rules": ["tst.item", "tst.lists"],
        "warmers": ["tst.items"],
        "permissions": ["tst.items.read", "tst.items.write"],
    }]}


def test_cli_table_and_plugin_subset(installed: list[EntryPoint]) -> None:
    installed.append(entry_point("tst", "plugins_fixtures.good"))
    installed.append(entry_point("ghost", "no_such_module_xyz:plugin"))
    result = runner.invoke(cli_app, ["plugins", "--plugin", "tst"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("tst.item_or_none", "tst.item_counts", "tst.items.write", "tst.lists"):
        assert text in result.stdout
    assert "ghost" not in result.stdout  # not asked for, so not imported


def test_cli_reports_every_problem_and_exits_1(installed: list[EntryPoint]) -> None:
    installed.append(entry_point("ghost", "no_such_module_xyz:plugin"))
    installed.append(entry_point("inert", "plugins_fixtures.broken:NOT_A_PLUGIN"))
    result = runner.invoke(cli_app, ["plugins", "--json"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "2 plugin problem(s)" in result.stderr
    assert "plugin 'ghost', import: cannot import" in result.stderr
    assert "plugin 'inert', register:" in result.stderr


def test_cli_with_no_plugins_says_so(installed: list[EntryPoint]) -> None:
    result = runner.invoke(cli_app, ["plugins"])
    assert result.exit_code == 0
    assert "no plugins installed" in result.stdout


def test_installed_console_script_lists_installed_plugins_as_json() -> None:
    script = Path(sys.executable).with_name("thorbis-cache")
    done = subprocess.run([str(script), "plugins", "--json"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    listing: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    keys = {"name", "distribution", "version", "namespace", "title", "description",
            "hook_api_version", "sql", "schemas", "patterns", "materialized_views", "rules",
            "warmers", "permissions"}
    names = {ep.name for ep in PluginManager().available()}
    assert {p["name"] for p in listing["plugins"]} == names
    for plugin in listing["plugins"]:
        assert set(plugin) == keys
        assert all(s.startswith(plugin["namespace"] + ".") for s in plugin["schemas"])



# --------------------------------------------------------------------------- deadlines, causes


async def test_a_hook_that_never_returns_is_a_timeout_naming_plugin_and_hook() -> None:
    Hanging.entered = Hanging.release = None
    manager = PluginManager(hook_timeout=0.2)
    manager.add(good, "tst")
    manager.add(Hanging, "hang")
    with pytest.raises(PluginLoadError) as info:
        await asyncio.wait_for(manager.load(["tst", "hang"]), timeout=10)
    [problem] = info.value.problems
    assert (problem.plugin, problem.hook) == ("hang", "register_key_schemas")
    assert problem.message.startswith("did not return within 0.2 s (the hook deadline, "
                                      "PluginManager(hook_timeout=...))")
    assert isinstance(info.value.__cause__, TimeoutError)
    assert_nothing_stored(manager)
    with pytest.raises(ConfigurationError, match="hook_timeout must be positive"):
        PluginManager(hook_timeout=0)


async def test_a_load_cancelled_during_a_hook_leaves_nothing_and_can_be_retried() -> None:
    Hanging.entered, Hanging.release = asyncio.Event(), asyncio.Event()
    try:
        manager = PluginManager()
        manager.add(good, "tst")
        manager.add(Hanging, "hang")
        load = asyncio.create_task(manager.load(["tst", "hang"]))
        await asyncio.wait_for(Hanging.entered.wait(), timeout=10)
        load.cancel()  # the host's own deadline
        with pytest.raises(asyncio.CancelledError):
            await load
        assert_nothing_stored(manager)  # pluggy holds neither plugin
        Hanging.release.set()
        loaded = await manager.load(["tst", "hang"])
        assert [p.name for p in loaded] == ["tst", "hang"]
    finally:
        Hanging.entered = Hanging.release = None


async def test_a_hook_exception_is_the_cause_of_the_error_that_reports_it() -> None:
    manager = PluginManager()
    manager.add(FailingStartup, "fst")
    await manager.load(["fst"])
    with pytest.raises(PluginLoadError) as info:
        await manager.notify_startup(object())  # type: ignore[arg-type]
    assert isinstance(info.value.__cause__, ConnectionError)
    assert str(info.value.__cause__) == "warm-up service unreachable"


class SchemasRaise:
    """The good plugin, whose register_key_schemas raises."""

    register_plugin_info = staticmethod(good.register_plugin_info)
    register_cache_patterns = staticmethod(good.register_cache_patterns)
    register_invalidation_rules = staticmethod(good.register_invalidation_rules)
    register_warmers = staticmethod(good.register_warmers)
    register_materialized_views = staticmethod(good.register_materialized_views)

    @hookimpl
    def register_key_schemas() -> list[KeySchema[Any]]:
        raise LookupError("schema catalogue unavailable")


async def test_a_raising_hook_is_one_problem_without_knock_on_problems() -> None:
    # Patterns, rules and warmers name the schemas the failed hook would have returned:
    # none of that is reported, only the hook's own failure.
    manager = PluginManager()
    manager.add(SchemasRaise, "tst")
    with pytest.raises(PluginLoadError) as info:
        await manager.load(["tst"])
    assert [str(p) for p in info.value.problems] == [
        "plugin 'tst', register_key_schemas: raised LookupError: schema catalogue unavailable"]
    assert isinstance(info.value.__cause__, LookupError)
    assert_nothing_stored(manager)


async def test_a_refused_start_leaves_no_trace_in_the_database(
    thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    # The rules name columns the tables lack: refused after the SQL ran, in its
    # transaction, so neither plugin's schema, table, view or index is left.
    app = CacheApp(thorbis_standalone_redis_url, postgres_dsn=thorbis_pg_dsn)
    app.register(good, "tst")
    app.register(BadDbReferences, "brc")
    with pytest.raises(PluginLoadError, match="'order_no' is not a column"):
        await app.start(["tst", "brc"], apply_sql=True)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('brc', 'tst')") == 0
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('brc', 'tst')") == 0
    finally:
        await conn.close()
    assert app.plugins.plugins == {}
    await app.aclose()
