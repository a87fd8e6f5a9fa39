"""The plugin contract kit, proven both ways.

* It passes good plugins: the example vertical (``examples/fitness_studio``), here
  registered in-process (its own tests load it through its entry point), and the
  plugin-manager tests' ``plugins_fixtures.good``.
* It fails a broken one: :class:`BrokenPlugin` loads cleanly, yet breaks every promise
  the loader cannot see; each check is run on it (or on a variant made with
  ``attrs.evolve``) and must raise an AssertionError whose message names the defect.
  Defects the loader does see must make loading fail, naming them.
* Its pytest wiring reports failures (``pytester``), including ``--thorbis-contract``.
* ``thorbis-cache new-plugin`` generates a distribution whose own tests pass as
  generated, run the way a plugin author runs them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
import thorbis_fitness_studio.plugin as fitness_plugin
from plugins_fixtures import good
from thorbis_fitness_studio.sample_data import SEED_SQL
from typer.testing import CliRunner

from thorbis_cache import Cache, KeyRing, KeySchema, SchemaRegistry, WarmBatch, hookspecs
from thorbis_cache.cache.codec import CodecSettings, SchemaCodec, make_converter
from thorbis_cache.cache.keys import CacheKey, SchemaKind
from thorbis_cache.errors import ConfigurationError, InvalidSchemaError, PluginLoadError
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.declarations import (
    InvalidationRule,
    MaterializedView,
    Operation,
    Permission,
    PluginInfo,
    RuleTarget,
    SqlScript,
    WarmContext,
    Warmer,
)
from thorbis_cache.plugins.hookspecs import hookimpl
from thorbis_cache.plugins.manager import LoadedPlugin
from thorbis_cache.plugins.scaffold import PluginNames, scaffold_files, write_plugin
from thorbis_cache.testing import contract_checks as checks
from thorbis_cache.testing import contract_db as db
from thorbis_cache.testing import contract_fills as fills
from thorbis_cache.testing import contract_isolation as isolation
from thorbis_cache.testing import contract_rules as rules
from thorbis_cache.testing import contract_views as views
from thorbis_cache.testing.contract import (
    ContractTarget,
    PluginContract,
    contract_test_names,
    load_plugin,
    run_async,
)
from thorbis_cache.testing.contract_data import read_entry

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- a good plugin


class TestFitnessStudioInProcess(PluginContract):
    """The example vertical passes the whole contract (in-process registration)."""

    plugin_object = fitness_plugin
    seed_sql = SEED_SQL


class TestGoodFixturePlugin(PluginContract):
    """The plugin-manager tests' small plugin passes too (one schema of every kind)."""

    plugin_object = good
    seed_sql = ("INSERT INTO tst.items (tenant_id, id, name, status) VALUES "
                "('acme', 1, 'pump', 'open'), ('acme', 2, 'valve', 'closed'), "
                "('globex', 1, 'hose', 'open')",)


# --------------------------------------------------------------------------- a broken plugin


@attrs.frozen
class Shout:
    """A value whose converter is not idempotent: every decode adds another '!'."""

    text: str = attrs.field(converter=lambda text: f"{text}!")


NOTE = KeySchema("brk.note", Shout, params={"note_id": int})
ITEM = KeySchema("brk.item", int, params={"item_id": int}, tags=("brk.items",))
#: Mirrors the view GROUPS_VIEW (valid: the view is the plugin's and shares the tag).
GROUPS = KeySchema("brk.groups", dict[str, int], tags=("brk.reports",), mirrors="brk.groups")
#: A schema of another plugin's namespace, which the broken warmer writes to.
STOLEN = KeySchema("fit.stolen", int)

BROKEN_SQL = """
CREATE SCHEMA IF NOT EXISTS brk;
CREATE TABLE IF NOT EXISTS brk.items (
    tenant_id text NOT NULL, id bigint NOT NULL, grp integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE IF NOT EXISTS brk.settings (name text NOT NULL, value text NOT NULL);
-- defect: no key and no ON CONFLICT, so every application adds a row
INSERT INTO brk.settings (name, value) VALUES ('schema_version', '1');
"""

#: defect: one tenant has several groups, so tenant_id alone does not identify a row.
GROUPS_VIEW = MaterializedView(
    "brk.groups",
    "SELECT tenant_id, grp, count(*)::integer AS n FROM brk.items GROUP BY tenant_id, grp",
    unique_index=("tenant_id",), sources=("brk.items",), tags=("brk.reports",),
)


def loads(
    entries: Mapping[CacheKey[Any], Any],
) -> Callable[[Sequence[CacheKey[Any]]], Awaitable[Mapping[CacheKey[Any], Any]]]:
    """A batch loader answering ``entries`` whatever it is asked for."""
    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        return entries

    return load


async def warm_items(ctx: WarmContext) -> AsyncIterator[Any]:
    one = ITEM.key(ctx.tenant, item_id=1)
    yield WarmBatch([one], loads({one: 1}), description="fine")
    stolen = STOLEN.key(ctx.tenant)  # defect: another plugin's namespace
    yield WarmBatch([stolen], loads({stolen: 2}), description="stolen")
    other = ITEM.key("globex" if ctx.tenant != "globex" else "acme", item_id=2)
    yield WarmBatch([other], loads({other: 2}), description="other tenant")  # defect
    three = ITEM.key(ctx.tenant, item_id=3)
    yield WarmBatch([three], loads({three: "three"}), description="a str")  # defect: not int
    four, five = ITEM.key(ctx.tenant, item_id=4), ITEM.key(ctx.tenant, item_id=5)
    yield WarmBatch([four], loads({five: 5}), description="greedy")  # defect: five not asked
    yield ITEM.key(ctx.tenant, item_id=6), 6  # defect: the warmer API before WarmBatch


class BrokenPlugin:
    """Loads cleanly, yet breaks every promise of the contract the loader cannot see."""

    @hookimpl
    def register_plugin_info(self) -> PluginInfo:
        return PluginInfo(namespace="brk", hook_api_version=1)

    @hookimpl
    def register_key_schemas(self) -> Sequence[KeySchema[Any]]:
        return [NOTE, ITEM, GROUPS]

    @hookimpl
    def register_sql(self) -> Sequence[SqlScript]:
        return [SqlScript("brk.tables", BROKEN_SQL)]

    @hookimpl
    def register_materialized_views(self) -> Sequence[MaterializedView]:
        return [GROUPS_VIEW]

    @hookimpl
    def register_invalidation_rules(self) -> Sequence[InvalidationRule]:
        return [
            # defect: the column is grp
            InvalidationRule("brk.item", table="brk.items", operations=["UPDATE"],
                             significant_columns=["group"],
                             targets=[RuleTarget(schema="brk.item", params={"item_id": "id"})]),
            # defect: there is no such table
            InvalidationRule("brk.ghosts", table="brk.ghosts", operations=["DELETE"],
                             targets=[RuleTarget(tag="brk.items")]),
            # defect: brk.groups mirrors the view, which an item change does not change
            InvalidationRule("brk.group_sizes", table="brk.items",
                             operations=["INSERT", "DELETE"],
                             targets=[RuleTarget(schema="brk.groups")]),
            # defect: the same, through the tag brk.groups carries
            InvalidationRule("brk.reports", table="brk.items", operations=["UPDATE"],
                             significant_columns=["grp"],
                             targets=[RuleTarget(tag="brk.reports")]),
        ]

    @hookimpl
    def register_warmers(self) -> Sequence[Warmer]:
        return [Warmer("brk.items", warm_items, schemas=["brk.item"])]

    @hookimpl
    def register_permissions(self) -> Sequence[Permission]:
        return [Permission("brk.items.read"), Permission("brk.items.write")]


@pytest.fixture(scope="module")
def broken() -> LoadedPlugin:
    """The broken plugin, loaded: the loader sees nothing wrong with it."""
    return run_async(lambda: load_plugin(ContractTarget("broken", BrokenPlugin())))


def _fails(check: Any, *args: Any, **kwargs: Any) -> str:
    """Run a check (sync or async) that must fail; return its message."""
    def call() -> None:
        result = check(*args, **kwargs)
        if inspect.isawaitable(result):
            run_async(lambda: result)

    with pytest.raises(AssertionError) as info:
        call()
    return str(info.value)


def test_the_broken_plugin_loads(broken: LoadedPlugin) -> None:
    # So every failure below is the contract's catch, not the loader's.
    assert broken.info.namespace == "brk"
    assert len(broken.rules) == 4
    assert GROUPS in broken.schemas


def test_the_loader_refuses_what_it_can_see() -> None:
    class Unloadable(BrokenPlugin):
        @hookimpl
        def register_materialized_views(self) -> Sequence[MaterializedView]:
            return [attrs.evolve(GROUPS_VIEW, unique_index=())]

        @hookimpl
        def register_permissions(self) -> Sequence[Permission]:
            return [Permission("brk.items.read"), Permission("brk.items.read")]

    class FromTheFuture(BrokenPlugin):
        @hookimpl
        def register_plugin_info(self) -> PluginInfo:
            return PluginInfo(namespace="brk", hook_api_version=99)

    with pytest.raises(PluginLoadError) as info:
        run_async(lambda: load_plugin(ContractTarget("unloadable", Unloadable())))
    message = str(info.value)
    assert "plugin 'unloadable'" in message
    assert "'brk.groups' asks for concurrent refresh but declares no unique_index" in message
    assert "permission 'brk.items.read' is declared twice" in message
    with pytest.raises(PluginLoadError, match="targets hook API version 99"):
        run_async(lambda: load_plugin(ContractTarget("future", FromTheFuture())))


def test_plugin_info_check_fails_an_unsupported_hook_api(broken: LoadedPlugin) -> None:
    future = attrs.evolve(broken, info=attrs.evolve(broken.info, hook_api_version=99))
    message = _fails(checks.check_plugin_info, future)
    assert "plugin 'broken': register_plugin_info" in message
    assert "targets hook API version 99; supported: 1" in message


def test_codec_check_fails_a_value_that_changes_when_decoded() -> None:
    message = _fails(checks.check_codec_round_trip, NOTE, max_examples=10)
    assert "key schema 'brk.note': wrote Shout(text=" in message


async def test_cache_check_fails_a_value_that_changes_when_decoded(thorbis_redis_url: str) -> None:
    registry = SchemaRegistry()
    registry.register(NOTE, owner="broken")
    sample = checks.Sample(NOTE, "acme", {"note_id": 1}, Shout("hi"))
    async with Cache.from_url(thorbis_redis_url, registry) as cache:
        with pytest.raises(AssertionError) as info:
            await checks.check_cache_round_trip(cache, [sample])
    message = str(info.value)
    assert "key schema 'brk.note', tenant 'acme', key '{acme}:brk.note:1'" in message
    assert "wrote Shout(text='hi!'), get read Shout(text='hi!!')" in message


class LeakySchema(KeySchema[Any]):
    """Builds keys without the tenant's hash tag: what the slot check exists to catch."""

    def key(self, tenant: str, /, **params: object) -> CacheKey[Any]:
        values = tuple(params[p.name] for p in self.params)
        segments = "".join(f":{p.encode(self.name, v)}" for p, v in zip(self.params, values))
        return CacheKey(self, tenant, values, f"{tenant}:{self.name}{segments}")


def test_key_check_fails_keys_outside_the_tenant_slot() -> None:
    message = _fails(checks.check_key_isolation,
                     [LeakySchema("brk.leaky", int, params={"id": int})], max_examples=20)
    assert "of schema 'brk.leaky' hashes to slot" in message
    assert "not to tenant" in message


def test_key_check_passes_hostile_parameters_of_real_schemas() -> None:
    # str parameters get hostile_text: separators, braces, globs, percent signs.
    schema = KeySchema("brk.search", int, params={"query": str, "page": int})
    checks.check_key_isolation([schema, ITEM, GROUPS], max_examples=200)


def test_sql_check_fails_sql_that_adds_rows_on_each_application(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    message = _fails(db.check_sql_idempotent, thorbis_pg_dsn, broken)
    assert "plugin 'broken': SQL is not idempotent" in message
    assert "second application: rows of brk.settings: '1' became '2'" in message


def test_sql_check_fails_sql_that_fails_the_second_time(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    once = "CREATE SCHEMA IF NOT EXISTS brk; CREATE TABLE brk.items (tenant_id text, id bigint)"
    plugin = attrs.evolve(broken, sql=(SqlScript("brk.tables", once),), views=())
    message = _fails(db.check_sql_idempotent, thorbis_pg_dsn, plugin)
    assert "SQL is not idempotent" in message
    assert "second application failed: plugin 'broken'" in message
    assert "CREATE TABLE brk.items" in message
    assert 'relation "items" already exists' in message


def test_sql_check_fails_sql_that_does_not_apply(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    plugin = attrs.evolve(broken, sql=(SqlScript("brk.tables", "CREATE TABLE brk.x (id"),))
    message = _fails(db.check_sql_idempotent, thorbis_pg_dsn, plugin)
    assert "SQL does not apply to a fresh database" in message
    assert "SQL script 'brk.tables': statement failed: 'CREATE TABLE brk.x (id'" in message


def test_view_check_fails_a_concurrent_view_without_unique_index(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    plugin = attrs.evolve(broken, views=(attrs.evolve(GROUPS_VIEW, unique_index=()),))

    async def run() -> None:
        async with db.applied(thorbis_pg_dsn, plugin) as conn:
            await db.check_materialized_views(conn, plugin)

    message = _fails(run)
    assert "materialized view 'brk.groups' asks for concurrent refresh but has no unique " \
           "index on plain columns (unique indexes: none)" in message


def test_view_check_fails_a_unique_index_that_does_not_identify_a_row(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    seed = ["INSERT INTO brk.items VALUES ('acme', 1, 1), ('acme', 2, 2)"]

    async def run() -> None:
        async with db.applied(thorbis_pg_dsn, broken, seed) as conn:
            await db.check_materialized_views(conn, broken)

    message = _fails(run)
    assert "materialized view 'brk.groups' does not refresh on the seed data" in message
    assert "could not create unique index" in message


def test_view_check_passes_the_same_view_with_a_real_key(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    view = attrs.evolve(GROUPS_VIEW, unique_index=("tenant_id", "grp"))
    plugin = attrs.evolve(broken, views=(view,))
    seed = ["INSERT INTO brk.items VALUES ('acme', 1, 1), ('acme', 2, 2)"]

    async def run() -> None:
        async with db.applied(thorbis_pg_dsn, plugin, seed) as conn:
            await db.check_materialized_views(conn, plugin)

    run_async(run)


def test_view_check_fails_sources_that_leave_out_a_table_it_reads(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    """Found as a plugin author would: ``sources=()`` (or one left out) passed, turning
    off the view's smart refresh and the unique-index check with it."""
    keyed = attrs.evolve(GROUPS_VIEW, unique_index=("tenant_id", "grp"))

    async def check(*views_: MaterializedView) -> None:
        plugin = attrs.evolve(broken, views=views_)
        async with db.applied(thorbis_pg_dsn, plugin) as conn:
            await views.check_sources_are_what_views_read(conn, plugin)

    message = _fails(lambda: check(attrs.evolve(keyed, sources=())))
    assert ("materialized view 'brk.groups' reads brk.items, which its sources (none) "
            "leave out") in message
    run_async(lambda: check(keyed))


def test_rule_check_fails_missing_tables_and_columns(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    async def run() -> None:
        async with db.applied(thorbis_pg_dsn, broken) as conn:
            await db.check_rules(conn, broken)

    message = _fails(run)
    assert "invalidation rule 'brk.item': significant column 'group' is not a column of " \
           "table 'brk.items'" in message
    assert "invalidation rule 'brk.ghosts': table 'brk.ghosts' does not exist" in message


def test_declaration_check_fails_references_to_other_plugins(broken: LoadedPlugin) -> None:
    rule = InvalidationRule("brk.foreign", table="brk.items", operations=["DELETE"],
                            targets=[RuleTarget(tag="fit.members"),
                                     RuleTarget(schema="fit.member", params={"member_id": "id"})])
    plugin = attrs.evolve(
        broken,
        rules=(rule,),
        views=(attrs.evolve(GROUPS_VIEW, tags=("brk.nothing",)),),
        warmers=(Warmer("other.warmer", warm_items),),
    )
    message = _fails(checks.check_declarations, plugin)
    assert "invalidation rule 'brk.foreign' targets tag 'fit.members'" in message
    assert "invalidation rule 'brk.foreign' uses key schema 'fit.member'" in message
    assert "materialized view 'brk.groups' invalidates tag 'brk.nothing'" in message
    assert "warmer 'other.warmer' is not named 'brk.<name>'" in message


def test_warmer_check_fails_keys_outside_the_namespace_tenant_or_type(
    broken: LoadedPlugin, thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    async def not_async(ctx: WarmContext) -> list[Any]:
        return []

    def explodes(ctx: WarmContext) -> AsyncIterator[Any]:
        raise RuntimeError("no database today")

    plugin = attrs.evolve(broken, warmers=(
        *broken.warmers,
        Warmer("brk.not_async", not_async),
        Warmer("brk.explodes", explodes),
    ))
    registry = SchemaRegistry()
    for schema in plugin.schemas:
        registry.register(schema, owner="broken")

    async def run() -> None:
        async with (
            Cache.from_url(thorbis_standalone_redis_url, registry, keyring=KeyRing.generate())
            as cache,
            db.applied(thorbis_pg_dsn, plugin) as conn,
        ):
            try:
                await checks.check_warmers(conn, cache, plugin, ("acme", "globex"))
            finally:
                written.extend([await cache.get(ITEM.key("acme", item_id=n)) for n in (1, 5)])

    written: list[Any] = []
    message = _fails(run)
    # The valid batch was run with warm(); the greedy one wrote nothing.
    assert written == [1, None]
    acme = "warmer 'brk.items' for tenant 'acme', batch"
    assert f"{acme} 2: key '{{acme}}:fit.stolen' is of schema 'fit.stolen', outside the " \
           "plugin's namespace 'brk'" in message
    assert f"{acme} 3: key '{{globex}}:brk.item:2' belongs to tenant 'globex', not to " \
           "'acme'" in message
    assert f"{acme} 4 (a str): ValueTypeError: key schema 'brk.item' holds int values; " \
           "got str" in message
    assert f"{acme} 5 (greedy): InvalidParameterError: key schema 'brk.item', parameter " \
           "'key': warm batch greedy loaded 'tc:{acme}:brk.item:5', which it was not asked " \
           "for" in message
    assert f"{acme} 6: expected a WarmBatch (keys and a loader of their entries), got " \
           "(CacheKey(" in message
    assert f"{acme} 1" not in message  # the fine batch
    assert "warmer 'brk.items' for tenant 'globex', batch 6: expected a WarmBatch" in message
    assert "warmer 'brk.not_async' for tenant 'acme': produce() returned <coroutine" in message
    assert "warmer 'brk.explodes' for tenant 'globex' raised RuntimeError: no database today" \
           in message


def test_relations_outside_the_plugin_s_schema_fail_it_alone(broken: LoadedPlugin) -> None:
    """Found as a plugin author would: checked only beside another installed plugin, and
    then said of every plugin loaded, not of the one at fault."""
    plugin = attrs.evolve(broken, rules=(
        InvalidationRule("brk.pet", "public.pets", ["INSERT"], [RuleTarget(tag="brk.items")]),
    ))
    message = _fails(checks.check_relations_namespaced, [plugin])
    assert "plugin 'broken': relations (1 problem(s))" in message
    assert "rule 'brk.pet' table 'public.pets' is outside its schema 'brk'" in message
    fine = attrs.evolve(broken, rules=(), views=(), name="fine")
    message = _fails(checks.check_relations_namespaced, [fine, plugin])
    assert "plugin 'broken': relations" in message  # the one at fault only
    checks.check_relations_namespaced([fine])


def test_permission_check_fails_duplicates_and_foreign_names(broken: LoadedPlugin) -> None:
    plugin = attrs.evolve(broken, permissions=(
        Permission("brk.items.read"), Permission("brk.items.read"),
        Permission("fit.members.read"), Permission("brk.Items"), Permission("brk"),
    ))
    message = _fails(checks.check_permissions, plugin)
    assert "plugin 'broken': permissions (4 problem(s))" in message
    assert "permission 'brk.items.read' is declared 2 times" in message
    for name in ("fit.members.read", "brk.Items", "brk"):
        assert f"permission {name!r} is not 'brk.<name>'" in message


@attrs.frozen
class Entity:
    id: int
    name: str


ENTITY = KeySchema("brk.entity", Entity, params={"entity_id": int}, kind=SchemaKind.HASH,
                   tags=("brk.fills",))
RANKS = KeySchema("brk.ranks", int, kind=SchemaKind.ZSET, tags=("brk.fills",))
SITES = KeySchema("brk.sites", int, kind=SchemaKind.GEO, tags=("brk.fills",))
#: Per kind, a sample of the old row and the value the row has after the change.
STALE_CASES = {
    "value": (checks.Sample(ITEM, "acme", {"item_id": 1}, 1), 2),
    "hash": (checks.Sample(ENTITY, "acme", {"entity_id": 1}, Entity(1, "old")), Entity(1, "new")),
    "zset": (checks.Sample(RANKS, "acme", {}, {1: 1.0, 2: 2.0}), {1: 1.0, 3: 3.0}),
    "geo": (checks.Sample(SITES, "acme", {}, {1: (2.0, 48.0)}), {1: (3.0, 49.0)}),
}


class LeaseKeepingCache(Cache):
    """Deletes the data keys but keeps their fill leases: a reader that loaded before
    the delete still holds its lease, and writes what it read."""

    async def delete(self, *keys: CacheKey[Any]) -> int:
        return await self.store.delete([self.redis_key(k) for k in keys])


def _fills_registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    for schema in (ITEM, ENTITY, RANKS, SITES):
        registry.register(schema, owner="broken")
    return registry


@pytest.mark.parametrize("kind", sorted(STALE_CASES))
async def test_stale_fill_check_fails_a_cache_whose_delete_keeps_the_fill_lease(
    kind: str, thorbis_redis_url: str
) -> None:
    old, new_value = STALE_CASES[kind]
    async with LeaseKeepingCache.from_url(thorbis_redis_url, _fills_registry()) as cache:
        with pytest.raises(AssertionError) as info:
            await fills.check_stale_fill(cache, old, new_value, by_tag=False)
    message = str(info.value)
    assert "plugin 'brk': read-through fills (1 problem(s))" in message
    assert f"{old.describe()}: after an invalidation (delete) during a fill, the next read " \
           "returned" in message
    assert "with 0 load(s): the stale fill was written" in message


@pytest.mark.parametrize("by_tag", [False, True], ids=["delete", "tag"])
@pytest.mark.parametrize("kind", sorted(STALE_CASES))
async def test_stale_fill_check_passes_the_real_cache(
    kind: str, by_tag: bool, thorbis_redis_url: str
) -> None:
    old, new_value = STALE_CASES[kind]
    async with Cache.from_url(thorbis_redis_url, _fills_registry()) as cache:
        await fills.check_stale_fill(cache, old, new_value, by_tag=by_tag)


def test_mirror_rule_check_fails_rules_that_target_a_view_mirror(broken: LoadedPlugin) -> None:
    message = _fails(fills.check_mirror_rules, broken)
    assert "plugin 'broken': rules targeting view mirrors (2 problem(s))" in message
    assert "rule 'brk.group_sizes' (table brk.items) targets key schema 'brk.groups', which " \
           "mirrors the view 'brk.groups': a change of brk.items does not change the view " \
           "until it is refreshed" in message
    assert "rule 'brk.reports' (table brk.items) targets tag 'brk.reports', carried by key " \
           "schema 'brk.groups', which mirrors the view 'brk.groups'" in message
    # Rules that target only base-table entries are fine.
    fills.check_mirror_rules(attrs.evolve(broken, rules=broken.rules[:2]))


# --------------------------------------------------------------------------- pytest wiring


SHOUT_PLUGIN = '''
import attrs
from thorbis_cache import KeySchema, PluginInfo, hookimpl


@attrs.frozen
class Shout:
    text: str = attrs.field(converter=lambda text: f"{text}!")


@hookimpl
def register_plugin_info():
    return PluginInfo(namespace="shout", hook_api_version=1)


@hookimpl
def register_key_schemas():
    return [KeySchema("shout.note", Shout, params={"note_id": int})]
'''


def test_contract_class_reports_a_failure_through_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(shout_plugin=SHOUT_PLUGIN)
    pytester.makepyfile(test_shout_contract="""
        import shout_plugin
        from thorbis_cache.testing.contract import PluginContract

        class TestShoutContract(PluginContract):
            plugin_object = shout_plugin
            max_examples = 10
    """)
    pytester.syspathinsert()
    # strict mode: the kit must not depend on the project's pytest-asyncio mode
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-o", "asyncio_mode=strict",
        "-o", "asyncio_default_fixture_loop_scope=function",
        "-k", "loads or named_under or codec or permissions or isolate",
    )
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines([
        "*FAILED*TestShoutContract::test_schemas_round_trip_through_the_codec*",
    ])
    assert "key schema 'shout.note': wrote Shout(text=" in result.stdout.str()


def test_contract_class_without_a_plugin_says_what_to_set(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="""
        from thorbis_cache.testing.contract import PluginContract

        class TestNothing(PluginContract):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "loads",
                                "-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*set `plugin = '<entry-point name>'` or `plugin_object*"])


def test_thorbis_contract_option_runs_the_contract(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function",
        "--thorbis-contract=fitness_studio",
        "--thorbis-contract=no_such_plugin", "-k", "loads or named_under or permissions",
    )
    # The plugin that does not load: one failure, its other tests skipped.
    result.assert_outcomes(passed=3, failed=1, skipped=2)
    out = result.stdout.str()
    assert "test_plugin_loads_and_targets_a_supported_api[no_such_plugin]" in out
    assert "plugin 'no_such_plugin', load: no plugin of this name is installed" in out


RAISING_PLUGINS = '''
from thorbis_cache import KeySchema, PluginInfo, hookimpl


class StartupFails:
    @hookimpl
    def register_plugin_info(self):
        return PluginInfo(namespace="sfail", hook_api_version=1)

    @hookimpl
    def register_key_schemas(self):
        return [KeySchema("sfail.note", str, params={"note_id": int})]

    @hookimpl
    async def on_startup(self, app):
        raise ConnectionError("licence server unreachable")


class SchemasFail:
    @hookimpl
    def register_plugin_info(self):
        return PluginInfo(namespace="kfail", hook_api_version=1)

    @hookimpl
    def register_key_schemas(self):
        raise LookupError("schema catalogue unavailable")

    @hookimpl
    def register_permissions(self):
        return []
'''


def test_contract_runs_on_startup_and_shows_its_exception(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(raising_plugins=RAISING_PLUGINS)
    pytester.makepyfile(test_startup_contract="""
        import raising_plugins
        from thorbis_cache.testing.contract import PluginContract

        class TestStartupContract(PluginContract):
            plugin_object = raising_plugins.StartupFails()
            plugin = "sfail"
    """)
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_on_startup or plugin_loads",
                                "-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "plugin 'sfail': a CacheApp holding it does not start:" in out
    assert "plugin 'sfail', on_startup: raised ConnectionError: licence server unreachable" \
        in out
    assert "caused by:" in out
    assert 'raise ConnectionError("licence server unreachable")' in out


def test_a_plugin_that_does_not_load_is_one_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(raising_plugins=RAISING_PLUGINS)
    pytester.makepyfile(test_schemas_contract="""
        import raising_plugins
        from thorbis_cache.testing.contract import PluginContract

        class TestSchemasContract(PluginContract):
            plugin_object = raising_plugins.SchemasFail()
            plugin = "kfail"
    """)
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:cacheprovider",
                                "-o", "asyncio_default_fixture_loop_scope=function")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("failed"), outcomes.get("errors"), outcomes.get("passed")) == \
        (1, None, None), outcomes
    assert outcomes["skipped"] >= len(contract_test_names()) - 1
    out = result.stdout.str()
    # The short summary repeats the failure's message in full when pytest sees a CI
    # environment (it truncates it to the terminal otherwise): count the reports only.
    reports = out.split("short test summary info")[0]
    assert reports.count("does not load:") == 1
    assert "1 plugin problem(s):" in out  # no knock-on problem
    assert "plugin 'kfail', register_key_schemas: raised LookupError: schema catalogue " \
           "unavailable" in out
    assert 'raise LookupError("schema catalogue unavailable")' in out


# --------------------------------------------------------------------------- docs


def test_docs_describe_every_contract_check_and_hook() -> None:
    text = (ROOT / "docs" / "plugin-authors.md").read_text(encoding="utf-8")
    for name in contract_test_names():
        assert name in text, f"docs/plugin-authors.md does not mention contract test {name}"
    # What a plugin author alone sees: every test, the topology-parametrized ones thrice,
    # the coexistence test skipped (test_generated_plugin_passes_its_own_tests runs it).
    count = len(contract_test_names())
    assert count == 16, "update the counts in docs/plugin-authors.md"
    assert f"the contract: {count + 3} passed, 1 skipped" in text
    assert f"the contract's {count} tests" in text
    hooks = [n for n in vars(hookspecs) if n.startswith(("register_", "on_"))]
    assert hooks
    for hook in hooks:
        assert hook in text, f"docs/plugin-authors.md does not mention hook {hook}"


# --------------------------------------------------------------------------- scaffold


def test_scaffold_derives_every_name() -> None:
    names = PluginNames.from_name("pet-grooming")
    assert names == PluginNames(
        name="pet_grooming", namespace="pet_grooming", distribution="thorbis-pet-grooming",
        package="thorbis_pet_grooming", title="Pet grooming", class_prefix="PetGrooming",
    )
    assert PluginNames.from_name("pet_grooming", "pg2").namespace == "pg2"


@pytest.mark.parametrize(("name", "namespace", "problem"), [
    ("Pets", None, "must be lower-case letters and digits"),
    ("pet grooming", None, "must be lower-case letters and digits"),
    ("1pets", None, "must be lower-case letters and digits"),
    ("pets", "Pets", "namespace 'Pets' must be 1-32 of a-z"),
    ("a" * 40, None, "pass a shorter --namespace"),
    ("order", None, "PostgreSQL reserves that name"),
    ("pets", "pg_pets", "PostgreSQL reserves that name"),
    ("pets", "thorbis", "schema 'thorbis' is thorbis-cache's own"),
    ("pets", "information_schema", "is the server's"),
    ("public", None, "is the server's"),
])
def test_scaffold_refuses_bad_names(name: str, namespace: str | None, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        PluginNames.from_name(name, namespace)


@pytest.mark.parametrize(("namespace", "problem"), [
    ("thorbis", "schema 'thorbis' is thorbis-cache's own"),
    ("public", "schema 'public' is the server's"),
    ("information_schema", "is the server's"),
    ("order", "PostgreSQL reserves that name"),
    ("pg_catalog", "PostgreSQL reserves that name"),
])
def test_a_plugin_may_not_take_a_schema_it_cannot_own(namespace: str, problem: str) -> None:
    """Found as a plugin author would: these loaded, and a plugin on namespace
    ``thorbis`` made its tables among the core's (one named like a core table would
    have been skipped by IF NOT EXISTS, in silence)."""
    assert [p for p in PluginInfo(namespace, 1).problems() if problem in p], problem


def test_an_operation_is_named_in_any_case_and_a_typo_lists_the_right_ones() -> None:
    rule = InvalidationRule("vet.pet", "vet.pets", ["insert", "Update"],
                            [RuleTarget(tag="vet.pets")])
    assert rule.operations == {Operation.INSERT, Operation.UPDATE}
    with pytest.raises(ValueError, match="'DELET' is not one of INSERT, UPDATE, DELETE"):
        InvalidationRule("vet.pet", "vet.pets", ["DELET"], [RuleTarget(tag="vet.pets")])


def test_scaffold_renders_every_placeholder_and_refuses_to_overwrite(tmp_path: Path) -> None:
    names = PluginNames.from_name("pet_grooming", "pet")
    files = scaffold_files(names)
    assert not [p for p, text in files.items() if "@@" in text]
    assert 'pet_grooming = "thorbis_pet_grooming.plugin"' in files["pyproject.toml"]
    root = write_plugin(names, tmp_path)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == \
        sorted(files)
    with pytest.raises(ConfigurationError, match="already exists"):
        write_plugin(names, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thorbis-pet-grooming"]


def test_new_plugin_command(tmp_path: Path) -> None:
    from thorbis_cache.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["new-plugin", "pet-grooming", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    assert "tests/test_pet_grooming_contract.py" in result.output
    assert (tmp_path / "thorbis-pet-grooming" / "src" / "thorbis_pet_grooming" / "plugin.py"
            ).is_file()
    again = runner.invoke(app, ["new-plugin", "pet-grooming", "--dir", str(tmp_path)])
    assert again.exit_code == 1
    assert "already exists" in again.output
    bad = runner.invoke(app, ["new-plugin", "Pets", "--dir", str(tmp_path)])
    assert bad.exit_code == 1
    assert "must be lower-case letters" in bad.output


@pytest.mark.slow
def test_generated_plugin_passes_its_own_tests(tmp_path: Path) -> None:
    """Install the generated distribution (no build isolation: offline, about 3 s) and
    run its tests in a fresh interpreter, which finds the plugin by its entry point."""
    root = write_plugin(PluginNames.from_name("pet-grooming"), tmp_path)
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", str(site), str(root)],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PYTEST_ADDOPTS", None)
    # -p thorbis_cache names the pytest11 entry point, so the fixtures load even where
    # plugin autoloading is disabled (and are not registered twice where it is not).
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(root / "tests"), "-p", "thorbis_cache",
         "-p", "no:cacheprovider", "-q"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, textwrap.shorten(output, 8000)
    # Nothing skipped (the template mirrors its view, so the mirror-rule test runs), and
    # the round trip and the stale-fill race run three times: single Redis, Cluster and
    # Sentinel.
    assert f"{len(contract_test_names()) + 4} passed" in output, output[-2000:]


# --------------------------------------------------------------------------- value types


class Opaque:
    """A plain class: the codec cannot store it."""


@attrs.frozen
class Slot:
    start: dt.time


@attrs.frozen
class Appointment:
    id: int
    slots: list[Slot]


@pytest.mark.parametrize(("value_type", "message"), [
    (Appointment, "value_type Appointment: field 'slots[].start' is datetime.time, a type "
                  "the codec cannot store and restore (supported: None, bool, int"),
    (dt.time, "value_type time: the value is datetime.time, a type the codec cannot"),
    (dict[str, Opaque], "field '[]' is test_contract_kit.Opaque, a type the codec cannot"),
    (Slot | None, "field 'start' is datetime.time"),
    # Passed the check, then failed the first use with a bare cattrs error.
    (object, "the value is object, which the codec cannot restore: declare typing.Any"),
    (dict[str, object], "field '[]' is object"),
])
def test_unsupported_field_types_are_refused_when_the_schema_is_declared(
    value_type: Any, message: str
) -> None:
    with pytest.raises(InvalidSchemaError) as info:
        KeySchema("vet.appointment", value_type, params={"appointment_id": int})
    assert str(info.value).startswith("key schema 'vet.appointment': ")
    assert message in str(info.value)
    kind = SchemaKind.HASH if attrs.has(value_type) else SchemaKind.VALUE
    if kind is SchemaKind.HASH:
        with pytest.raises(InvalidSchemaError, match=r"'slots\[\]\.start' is datetime\.time"):
            KeySchema("vet.appointment", value_type, kind=kind)


@attrs.frozen
class EveryType:
    a: int
    b: float | None
    c: decimal.Decimal
    d: uuid.UUID
    e: dt.date
    f: dt.datetime
    g: SchemaKind
    h: tuple[int, str]
    i: frozenset[str]
    j: dict[str, list[bytes]]
    k: Literal["x", "y"]
    m: Any


def test_every_supported_type_is_accepted_and_round_trips() -> None:
    schema = KeySchema("vet.every", EveryType, params={"n": int})
    value = EveryType(1, None, decimal.Decimal("1.50"), uuid.UUID(int=7), dt.date(2026, 1, 2),
                      dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC), SchemaKind.HASH,
                      (1, "a"), frozenset({"s"}), {"k": [b"\x00"]}, "y", {"free": [1]})
    codec: Any = SchemaCodec(schema, make_converter(), None, CodecSettings())
    assert codec.decode_value(codec.encode(value, b"k", "acme"), b"k", "acme") == value


# --------------------------------------------------------------------------- rules at run time


GOOD_SEED = TestGoodFixturePlugin.seed_sql


@pytest.fixture(scope="module")
def good_plugin() -> LoadedPlugin:
    return run_async(lambda: load_plugin(ContractTarget("good", good)))


def _rule_reading_name(plugin: LoadedPlugin) -> LoadedPlugin:
    """The good plugin, its item rule reading the key's int parameter from a text column
    (the defect: `pet_id` <- `name`)."""
    wrong = attrs.evolve(plugin.rules[0], targets=[
        RuleTarget(schema="tst.item", params={"item_id": "name"})])
    return attrs.evolve(plugin, rules=(wrong, *plugin.rules[1:]))


def test_rule_type_check_fails_a_parameter_read_from_a_column_of_another_type(
    good_plugin: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    plugin = _rule_reading_name(good_plugin)

    async def run() -> None:
        async with db.applied(thorbis_pg_dsn, plugin) as conn:
            await db.check_rules(conn, plugin)  # the column exists: this passes
            await rules.check_rule_column_types(conn, plugin)

    message = _fails(run)
    assert "plugin 'good': invalidation rule column types (1 problem(s))" in message
    assert "invalidation rule 'tst.item', target 0 ('tst.item'): parameter 'item_id' is " \
           "int, but column tst.items.name is text: every change would be dead-lettered" \
           in message


def test_rules_end_to_end_fail_a_parameter_read_from_a_column_of_another_type(
    good_plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    plugin = _rule_reading_name(good_plugin)
    message = _fails(rules.check_rules_end_to_end, thorbis_pg_dsn,
                     thorbis_standalone_redis_url, plugin, GOOD_SEED, ("acme", "globex"))
    assert "plugin 'good': invalidation rules end to end" in message
    assert "seed_sql: a change was dead-lettered by the worker: rule 'tst.item' target " \
           "'tst.item': parameter 'item_id' from column 'name': cannot convert 'pump'" in message
    assert "invalidation rule 'tst.item' (tst.items): an UPDATE of a seed row was " \
           "dead-lettered by the worker" in message


def test_rules_end_to_end_fail_when_the_worker_leaves_the_targets_cached(
    good_plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_standalone_redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class IdleWorker(OutboxWorker):
        async def drain(self) -> list[Any]:
            return []

    monkeypatch.setattr(rules, "OutboxWorker", IdleWorker)
    message = _fails(rules.check_rules_end_to_end, thorbis_pg_dsn,
                     thorbis_standalone_redis_url, good_plugin, GOOD_SEED, ("acme", "globex"))
    assert "invalidation rules end to end (2 problem(s))" in message
    assert "invalidation rule 'tst.item' (tst.items): after an UPDATE of a seed row of " \
           "tenant 'acme' and the worker's drain, key '{acme}:tst.item:1' (value of a " \
           "target) is still cached" in message
    assert "invalidation rule 'tst.lists' (tst.items): after an UPDATE" in message
    assert "'{acme}:tst.items_by_status:" in message


def test_rules_end_to_end_need_a_seed_row_of_each_rule_table(
    good_plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    message = _fails(rules.check_rules_end_to_end, thorbis_pg_dsn,
                     thorbis_standalone_redis_url, good_plugin,
                     ["SELECT 1"], ("acme", "globex"))
    assert "invalidation rule 'tst.item' (tst.items): the seed has no row of tst.items for " \
           "tenants acme, globex with id set; add one to seed_sql" in message


# --------------------------------------------------------------------------- warmers and tenants


async def warm_items_of_every_tenant(ctx: WarmContext) -> AsyncIterator[WarmBatch]:
    """The good plugin's warmer with the defect: its load reads the ids of any tenant."""
    ids = await ctx.fetch("SELECT id FROM tst.items WHERE tenant_id = $1", ctx.tenant)
    keys = {good.ITEM.key(ctx.tenant, item_id=row["id"]): row["id"] for row in ids}

    async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
        rows = await ctx.fetch("SELECT id, name, status FROM tst.items WHERE id = ANY($1)",
                               [keys[k] for k in leased])  # defect: no tenant_id = $1
        return {good.ITEM.key(ctx.tenant, item_id=row["id"]): good.Item(**row)
                for row in rows}

    yield WarmBatch(keys, load, description="items")


def test_tenant_check_fails_a_warmer_that_forgets_the_tenant_filter(
    good_plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    plugin = attrs.evolve(good_plugin, warmers=(
        Warmer("tst.items", warm_items_of_every_tenant, schemas=["tst.item"]),))

    async def run() -> None:
        async with db.applied(thorbis_pg_dsn, plugin, GOOD_SEED) as conn:
            await isolation.check_warmers_isolate_tenants(
                conn, thorbis_standalone_redis_url, plugin, "acme")

    message = _fails(run)
    assert "plugin 'good': warmers and tenants" in message
    assert "warmer 'tst.items' for tenant 'acme', once tenant 'decoy' has rows with the " \
           "same ids and other data" in message
    assert "key '{acme}:tst.item:1' holds Item(" in message
    assert "it reads rows of other tenants: filter every query by the tenant" in message


def test_tenant_check_passes_the_same_warmer_with_the_filter(
    good_plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    async def run() -> None:
        async with db.applied(thorbis_pg_dsn, good_plugin, GOOD_SEED) as conn:
            await isolation.check_warmers_isolate_tenants(
                conn, thorbis_standalone_redis_url, good_plugin, "acme")
            # The decoy's copies were rolled back.
            assert await conn.fetchval(
                "SELECT count(*) FROM tst.items WHERE tenant_id = 'decoy'") == 0

    run_async(run)


async def warm_bad_members(ctx: WarmContext) -> AsyncIterator[WarmBatch]:
    listed = good.BY_STATUS.key(ctx.tenant, status="open")
    near = good.NEAR.key(ctx.tenant)
    scored = good.BY_STATUS.key(ctx.tenant, status="closed")
    yield WarmBatch([listed], loads({listed: [1, 2]}), description="a list")
    yield WarmBatch([near], loads({near: {1: (200.0, 10.0)}}), description="off the map")
    yield WarmBatch([scored], loads({scored: {"x": 1.0, 2: float("nan")}}),
                    description="a str member")


def test_warmer_check_fails_sorted_set_and_geo_entries_that_are_not_members(
    good_plugin: LoadedPlugin, thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    plugin = attrs.evolve(good_plugin, warmers=(Warmer("tst.lists", warm_bad_members),))
    registry = SchemaRegistry()
    for schema in plugin.schemas:
        registry.register(schema, owner="good")

    async def run() -> None:
        async with (
            Cache.from_url(thorbis_standalone_redis_url, registry, keyring=KeyRing.generate())
            as cache,
            db.applied(thorbis_pg_dsn, plugin) as conn,
        ):
            await checks.check_warmers(conn, cache, plugin, ("acme",))

    message = _fails(run)
    where = "warmer 'tst.lists' for tenant 'acme', batch"
    assert f"{where} 1 (a list): key '{{acme}}:tst.items_by_status:open': a zset entry is " \
           "a mapping member -> score, got [1, 2]" in message
    assert f"{where} 2 (off the map): key '{{acme}}:tst.items_near': member 1: (200.0, " \
           "10.0) is off the map" in message
    assert f"{where} 3 (a str member): key '{{acme}}:tst.items_by_status:closed': member " \
           "'x': expected int, got str" in message


# --------------------------------------------------------------------------- unique indexes


ONE_ROW_PER_TENANT = ["INSERT INTO brk.items VALUES ('acme', 1, 1), ('globex', 1, 7)"]


def _view_check(dsn: str, plugin: LoadedPlugin) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with db.applied(dsn, plugin, ONE_ROW_PER_TENANT) as conn:
            await db.check_materialized_views(conn, plugin)  # the seed cannot tell
            await views.check_unique_indexes_identify_rows(conn, plugin)
            assert await conn.fetchval("SELECT count(*) FROM brk.items") == 2  # rolled back

    return run


def test_unique_index_check_fails_an_index_missing_a_group_by_column(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    # GROUPS_VIEW groups by (tenant_id, grp) and is indexed on tenant_id alone; a seed of
    # one group per tenant refreshes fine.
    message = _fails(_view_check(thorbis_pg_dsn, broken))
    assert "plugin 'broken': materialized view unique indexes (1 problem(s))" in message
    assert "materialized view 'brk.groups': its unique index (tenant_id) does not identify " \
           "a row: a copy of a row of brk.items with a new primary key and only grp " \
           "changed gives two rows of the view with the same (tenant_id)" in message
    assert "could not create unique index" in message
    assert "declare every column that tells two rows apart" in message


def test_unique_index_check_fails_a_row_view_indexed_without_the_source_key(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    rows = MaterializedView("brk.rows", "SELECT tenant_id, id, grp FROM brk.items",
                            unique_index=("tenant_id", "grp"), sources=("brk.items",))
    plugin = attrs.evolve(broken, views=(rows,))
    message = _fails(_view_check(thorbis_pg_dsn, plugin))
    assert "materialized view 'brk.rows': its unique index (tenant_id, grp) does not " \
           "identify a row: a copy of a row of brk.items with a new primary key only" in message


def test_unique_index_check_passes_indexes_that_identify_rows(
    broken: LoadedPlugin, thorbis_pg_dsn: str
) -> None:
    rows = MaterializedView("brk.rows", "SELECT tenant_id, id, grp FROM brk.items",
                            unique_index=("tenant_id", "id"), sources=("brk.items",))
    groups = attrs.evolve(GROUPS_VIEW, unique_index=("tenant_id", "grp"))
    run_async(_view_check(thorbis_pg_dsn, attrs.evolve(broken, views=(groups, rows))))


async def test_a_geo_entry_reads_as_members_at_positions(
    thorbis_standalone_redis_url: str
) -> None:
    """What the kit's messages show of a geo index: its members and positions, not the
    raw geohash scores (found as a plugin author would, in a warmer's tenant leak)."""
    registry = SchemaRegistry()
    registry.register(good.NEAR, owner="tests")
    async with Cache.from_url(thorbis_standalone_redis_url, registry) as cache:
        key = good.NEAR.key("acme")
        await cache.geo(key).add({7: (2.35, 48.85)}, replace=True)
        [(member, (lon, lat))] = await read_entry(cache, key)
        assert member == 7
        assert (lon, lat) == (pytest.approx(2.35, abs=1e-5), pytest.approx(48.85, abs=1e-5))
