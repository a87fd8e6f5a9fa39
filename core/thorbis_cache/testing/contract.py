"""The plugin contract kit: one test class that checks any plugin against the contract.

A plugin author's whole contract test module is::

    from thorbis_cache.testing.contract import PluginContract

    class TestMyVerticalContract(PluginContract):
        plugin = "my_vertical"          # entry-point name (installed distribution)

(or ``plugin_object = my_vertical.plugin`` for a plugin that is not installed). pytest
collects the inherited ``test_*`` methods; they use the ``thorbis_*`` fixtures of
:mod:`thorbis_cache.testing.pytest_plugin` (real Redis, standalone and cluster, and a
fresh PostgreSQL database per test), and the strategies of
:mod:`thorbis_cache.testing.strategies`. ``pytest --thorbis-contract=NAME`` runs the
same class against an installed plugin without writing any module.

Every test method is synchronous and runs its asynchronous work on an event loop of
its own thread, so the kit works whatever the project's pytest-asyncio mode (strict,
auto, or not installed). Each check is also a plain function raising
:class:`AssertionError` with every problem it found, for authors who want to call one
from their own tests: :mod:`thorbis_cache.testing.contract_checks` (declarations,
values, keys, warmers, permissions) and :mod:`thorbis_cache.testing.contract_db` (SQL,
materialized views, rules).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thorbis_cache.cache.core import Cache
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.cache.keys import validate_tenant
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.errors import ConfigurationError, PluginLoadError
from thorbis_cache.plugins.manager import LoadedPlugin, PluginManager
from thorbis_cache.testing import contract_checks as checks
from thorbis_cache.testing import contract_db as db
from thorbis_cache.testing import contract_fills as fills
from thorbis_cache.testing import contract_isolation as isolation
from thorbis_cache.testing import contract_rules as rules
from thorbis_cache.testing import contract_views as views
from thorbis_cache.testing.loop_thread import LoopThread, run_async

__all__ = [
    "DEFAULT_TENANTS",
    "ContractTarget",
    "LoopThread",
    "PluginContract",
    "contract_test_names",
    "load_plugin",
    "run_async",
]

#: The tenants the contract warms and writes for; ``seed_sql`` may insert rows for them.
DEFAULT_TENANTS = ("acme", "globex")


# --------------------------------------------------------------------------- the target


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@attrs.frozen
class ContractTarget:
    """Which plugin a contract run checks, and how.

    :ivar name: the entry-point name of an installed plugin, or the name under which
        ``obj`` is added (default: the object's ``__name__``).
    :ivar obj: an in-process plugin object (a module or an object with ``@hookimpl``
        functions), registered with :meth:`PluginManager.add`; None for an entry point.
    :ivar seed_sql: statements run after the plugin's SQL, before warming and
        refreshing, so that warmers and views have rows to work on.
    :ivar tenants: two distinct tenant ids the seed data uses.
    :raises ConfigurationError: no plugin, or not two distinct tenants.
    :raises InvalidTenantId: a tenant id breaks the tenant rule.
    """

    name: str | None = None
    obj: object = None
    seed_sql: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    tenants: tuple[str, str] = DEFAULT_TENANTS

    def __attrs_post_init__(self) -> None:
        if self.name is None and self.obj is None:
            raise ConfigurationError(
                "the contract needs a plugin: set `plugin = '<entry-point name>'` or "
                "`plugin_object = <module>` on the PluginContract subclass"
            )
        for tenant in self.tenants:
            validate_tenant(tenant)
        if len(self.tenants) != 2 or self.tenants[0] == self.tenants[1]:
            raise ConfigurationError(
                f"tenants must be two distinct tenant ids, got {self.tenants!r}"
            )

    @property
    def label(self) -> str:
        """How reports name the plugin."""
        return self.name or str(getattr(self.obj, "__name__", self.obj))


async def load_plugin(target: ContractTarget) -> LoadedPlugin:
    """Load the target with a fresh :class:`PluginManager` (only it, nothing else
    installed), the way a host does.

    :raises PluginLoadError: with every problem the manager found.
    """
    manager = PluginManager()
    name = target.name
    if target.obj is not None:
        if name is None:
            # The manager's own default, computed here so that we can ask for it by name.
            name = getattr(target.obj, "__name__", None) or (
                manager.pluggy_manager.get_canonical_name(target.obj)
            )
        manager.add(target.obj, name)
    assert name is not None
    loaded = await manager.load([name])
    return loaded[0]


@attrs.define
class _LoadOutcome:
    """The class's one load of the plugin: the plugin, or the error; whether a test has
    reported that error yet (the others skip instead of repeating it)."""

    plugin: LoadedPlugin | None = None
    error: PluginLoadError | None = None
    reported: bool = False

    def fail_once(self, label: str) -> None:
        """Fail with the load error the first time, skip after that."""
        __tracebackhide__ = True
        if self.error is None:
            return
        if self.reported:
            pytest.skip(f"plugin {label!r} does not load (reported once, by the first "
                        "contract test that ran)")
        self.reported = True
        pytest.fail(f"plugin {label!r} does not load:\n{self.error}{_cause_of(self.error)}",
                    pytrace=False)


def _cause_of(error: BaseException) -> str:
    """The exception a hook raised, with where it was raised (the end of its trace)."""
    cause = error.__cause__
    if cause is None:
        return ""
    trace = traceback.format_exception(cause)
    return "\n\ncaused by:\n" + "".join([*trace[1:][-4:-1], trace[-1]]).rstrip()


def _load(target: ContractTarget) -> _LoadOutcome:
    try:
        return _LoadOutcome(run_async(lambda: load_plugin(target)))
    except PluginLoadError as exc:
        return _LoadOutcome(error=exc)


# --------------------------------------------------------------------------- the test class


class PluginContract:
    """Subclass me (with a ``Test`` name) to run the contract against a plugin.

    Set :attr:`plugin` (an installed entry point) or :attr:`plugin_object` (an
    in-process plugin; with both, ``plugin`` is the name it is added under); the other
    class variables tune the run. Every test name says which promise of the contract it
    checks, and every failure lists all the problems found, naming the declaration.
    """

    #: Entry-point name of an installed plugin (group ``thorbis_cache.plugins``).
    plugin: ClassVar[str | None] = None
    #: An in-process plugin (module or object with ``@hookimpl`` functions).
    plugin_object: ClassVar[object] = None
    #: SQL run after the plugin's own SQL, before warming and refreshing views.
    seed_sql: ClassVar[Sequence[str]] = ()
    #: Two tenant ids; ``seed_sql`` should insert rows for both.
    tenants: ClassVar[tuple[str, str]] = DEFAULT_TENANTS
    #: Hypothesis examples per schema for the codec and per run for key isolation.
    max_examples: ClassVar[int] = 50
    #: Hypothesis examples per schema written to and read back from real Redis.
    cache_examples: ClassVar[int] = 5

    # ---- fixtures

    @pytest.fixture(scope="class")
    @classmethod
    def thorbis_contract_target(cls) -> ContractTarget:
        """What this class checks (``--thorbis-contract`` parametrizes it instead)."""
        return ContractTarget(cls.plugin, cls.plugin_object, tuple(cls.seed_sql), cls.tenants)

    @pytest.fixture(scope="class")
    @classmethod
    def thorbis_contract_load(cls, thorbis_contract_target: ContractTarget) -> _LoadOutcome:
        """The plugin, loaded once per class by a fresh manager, or why not."""
        return _load(thorbis_contract_target)

    @pytest.fixture
    @classmethod
    def thorbis_contract_plugin(
        cls, thorbis_contract_load: _LoadOutcome, thorbis_contract_target: ContractTarget
    ) -> LoadedPlugin:
        """The loaded plugin. When it does not load, the first test to ask fails with
        the report and the others are skipped: one failure, not one per test."""
        thorbis_contract_load.fail_once(thorbis_contract_target.label)
        assert thorbis_contract_load.plugin is not None
        return thorbis_contract_load.plugin

    # ---- 1. loading

    def test_plugin_loads_and_targets_a_supported_api(
        self, thorbis_contract_load: _LoadOutcome, thorbis_contract_target: ContractTarget
    ) -> None:
        """The plugin loads with no problem and states a supported hook API version."""
        # The outcome, not thorbis_contract_plugin: a load error fails this test itself
        # (rather than erroring in its setup).
        thorbis_contract_load.fail_once(thorbis_contract_target.label)
        assert thorbis_contract_load.plugin is not None
        checks.check_plugin_info(thorbis_contract_load.plugin)

    def test_on_startup_runs_on_a_started_app(
        self,
        thorbis_contract_plugin: LoadedPlugin,
        thorbis_contract_target: ContractTarget,
        thorbis_standalone_redis_url: str,
    ) -> None:
        """A :class:`~thorbis_cache.app.CacheApp` holding only the plugin starts: its
        ``on_startup`` (if any) runs on the started app without raising, within the
        hook deadline (the app has a cache on a real Redis, no ``postgres_dsn``)."""
        error = run_async(lambda: _start_app(thorbis_contract_target,
                                             thorbis_standalone_redis_url))
        if error is not None:
            pytest.fail(f"plugin {thorbis_contract_target.label!r}: a CacheApp holding it "
                        f"does not start:\n{error}{_cause_of(error)}", pytrace=False)

    def test_declarations_are_named_under_the_namespace(
        self, thorbis_contract_plugin: LoadedPlugin
    ) -> None:
        """Every name starts with the namespace; references point at own schemas/tags."""
        checks.check_declarations(thorbis_contract_plugin)

    # ---- 2. values

    def test_schemas_round_trip_through_the_codec(
        self, thorbis_contract_plugin: LoadedPlugin
    ) -> None:
        """Any value of each schema's type encodes and decodes back equal (encrypted
        when sensitive, compressed when large), on both decoders."""
        keyring = KeyRing.generate()
        for schema in _need_schemas(thorbis_contract_plugin):
            checks.check_codec_round_trip(schema, keyring=keyring,
                                          max_examples=self.max_examples)

    def test_schemas_round_trip_through_a_real_cache(
        self, thorbis_contract_plugin: LoadedPlugin, thorbis_redis_url: str
    ) -> None:
        """A sample of every schema is written and read back through a real
        :class:`Cache` (value set/get, hash replace/get, sorted set and geo add/read),
        on a single Redis and on a cluster."""
        schemas = _need_schemas(thorbis_contract_plugin)
        with _real_cache(thorbis_redis_url, thorbis_contract_plugin) as (loop, cache):
            for schema in schemas:
                # One property per schema: a joint draw over all schemas would
                # multiply their value filters' rejection rates.
                @settings(max_examples=self.cache_examples, deadline=None, database=None,
                          suppress_health_check=checks.SUPPRESSED_HEALTH_CHECKS)
                @given(checks.samples(schema))
                def round_trip(sample: checks.Sample) -> None:
                    loop.run(checks.check_cache_round_trip(cache, [sample]))

                round_trip()

    def test_read_through_refuses_stale_fills(
        self, thorbis_contract_plugin: LoadedPlugin, thorbis_redis_url: str
    ) -> None:
        """For every schema, whatever its kind (value, hash, sorted set, geo index): a
        read-through whose loader read a row before the key was invalidated (deleted,
        or through its first tag) does not cache it; the next read loads the new row.
        With ``negative_ttl``, an absent row is cached until the same invalidation. On a
        single Redis and on a cluster."""
        schemas = _need_schemas(thorbis_contract_plugin)
        with _real_cache(thorbis_redis_url, thorbis_contract_plugin) as (loop, cache):
            for schema in schemas:
                @settings(max_examples=self.cache_examples, deadline=None, database=None,
                          suppress_health_check=checks.SUPPRESSED_HEALTH_CHECKS)
                @given(fills.stale_fill_cases(schema), st.booleans())
                def race(case: tuple[checks.Sample, Any], by_tag: bool) -> None:
                    old, new_value = case
                    loop.run(fills.check_stale_fill(cache, old, new_value, by_tag=by_tag))

                race()

    def test_rules_leave_view_mirrors_to_their_refresh(
        self, thorbis_contract_plugin: LoadedPlugin
    ) -> None:
        """No invalidation rule targets a schema that mirrors a materialized view
        (``KeySchema.mirrors``), by name or through one of its tags: those entries are
        invalidated by the view's refresh; a base-table change cannot change them."""
        checks_needed = [s for s in thorbis_contract_plugin.schemas if s.mirrors]
        if not checks_needed:
            pytest.skip(f"plugin {thorbis_contract_plugin.name!r} mirrors no view")
        fills.check_mirror_rules(thorbis_contract_plugin)

    # ---- 3. keys

    def test_keys_isolate_tenants_and_stay_in_the_tenant_slot(
        self, thorbis_contract_plugin: LoadedPlugin
    ) -> None:
        """For any two tenants and any parameters: a key hashes to its tenant's slot,
        parses back to the same schema, tenant and parameters, and no key of one tenant
        starts with the other's prefix."""
        checks.check_key_isolation(_need_schemas(thorbis_contract_plugin),
                                   max_examples=self.max_examples * 2)

    # ---- 4-6. PostgreSQL

    def test_sql_applies_cleanly_twice(
        self, thorbis_contract_plugin: LoadedPlugin, thorbis_pg_dsn: str
    ) -> None:
        """The plugin's SQL applies to a fresh database, and a second application
        succeeds and changes nothing (objects, definitions, row counts)."""
        if not (thorbis_contract_plugin.sql or thorbis_contract_plugin.views):
            pytest.skip(f"plugin {thorbis_contract_plugin.name!r} declares no SQL")
        run_async(lambda: db.check_sql_idempotent(thorbis_pg_dsn, thorbis_contract_plugin))

    def test_materialized_views_refresh_concurrently(
        self,
        thorbis_contract_plugin: LoadedPlugin,
        thorbis_contract_target: ContractTarget,
        thorbis_pg_dsn: str,
    ) -> None:
        """Every view exists and refreshes, and its ``sources`` hold every table it
        reads; one that asks for concurrent refresh has a usable unique index and
        ``REFRESH ... CONCURRENTLY`` succeeds (on seeded data);
        a declared unique index identifies a row for any data, not only the seed's
        (copies of seed rows differing in one column; see :mod:`.contract_views`)."""
        plugin, seed = thorbis_contract_plugin, thorbis_contract_target.seed_sql
        if not plugin.views:
            pytest.skip(f"plugin {plugin.name!r} declares no materialized views")

        async def run() -> None:
            async with db.applied(thorbis_pg_dsn, plugin, seed) as conn:
                await db.check_materialized_views(conn, plugin)
                await views.check_sources_are_what_views_read(conn, plugin)
                await views.check_unique_indexes_identify_rows(conn, plugin)

        run_async(run)

    def test_rules_reference_real_tables_columns_and_own_declarations(
        self, thorbis_contract_plugin: LoadedPlugin, thorbis_pg_dsn: str
    ) -> None:
        """Every rule's table and columns exist once the SQL is applied, and its
        targets are schemas and tags of this plugin."""
        plugin = thorbis_contract_plugin
        if not plugin.rules:
            pytest.skip(f"plugin {plugin.name!r} declares no invalidation rules")

        async def run() -> None:
            async with db.applied(thorbis_pg_dsn, plugin) as conn:
                await db.check_rules(conn, plugin)
                await rules.check_rule_column_types(conn, plugin)

        run_async(run)

    def test_rules_invalidate_their_targets_end_to_end(
        self,
        thorbis_contract_plugin: LoadedPlugin,
        thorbis_contract_target: ContractTarget,
        thorbis_pg_dsn: str,
        thorbis_standalone_redis_url: str,
    ) -> None:
        """What ``db init`` does (core migrations, the plugin's SQL, capture triggers),
        then ``seed_sql``; for every rule, an entry cached for each target, a change of a
        seed row that fires the rule, the outbox worker drained: every entry is gone and
        nothing was dead-lettered."""
        plugin, target = thorbis_contract_plugin, thorbis_contract_target
        if not plugin.rules:
            pytest.skip(f"plugin {plugin.name!r} declares no invalidation rules")
        if not target.seed_sql:
            pytest.skip("no seed_sql: rules are checked end to end on seed rows of their "
                        "tables")
        run_async(lambda: rules.check_rules_end_to_end(
            thorbis_pg_dsn, thorbis_standalone_redis_url, plugin, target.seed_sql,
            target.tenants))

    # ---- 7. warmers

    def test_warmers_produce_only_keys_of_their_namespace(
        self,
        thorbis_contract_plugin: LoadedPlugin,
        thorbis_contract_target: ContractTarget,
        thorbis_pg_dsn: str,
        thorbis_standalone_redis_url: str,
    ) -> None:
        """Each warmer, run for each tenant on the empty database and again after
        ``seed_sql``, yields only keys of its plugin's schemas, for the tenant it warms,
        with values of the schema's type."""
        plugin, target = thorbis_contract_plugin, thorbis_contract_target
        if not plugin.warmers:
            pytest.skip(f"plugin {plugin.name!r} declares no warmers")
        registry = SchemaRegistry()
        for schema in plugin.schemas:
            registry.register(schema, owner=plugin.name)

        async def run() -> None:
            cache = await _open_cache(thorbis_standalone_redis_url, registry, KeyRing.generate())
            try:
                async with db.applied(thorbis_pg_dsn, plugin) as conn:
                    await checks.check_warmers(conn, cache, plugin, target.tenants)
                    await db.seed(conn, plugin, target.seed_sql)
                    await checks.check_warmers(conn, cache, plugin, target.tenants)
            finally:
                await cache.aclose()

        run_async(run)

    def test_warmers_cache_only_their_tenants_rows(
        self,
        thorbis_contract_plugin: LoadedPlugin,
        thorbis_contract_target: ContractTarget,
        thorbis_pg_dsn: str,
        thorbis_standalone_redis_url: str,
    ) -> None:
        """Each warmer, run for the first tenant after ``seed_sql``, caches the same
        entries once another tenant holds copies of that tenant's rows with the same ids
        and other data, in either scan order: a warmer whose queries forget the tenant
        filter caches the other tenant's rows under this tenant's keys."""
        plugin, target = thorbis_contract_plugin, thorbis_contract_target
        if not plugin.warmers:
            pytest.skip(f"plugin {plugin.name!r} declares no warmers")
        if not target.seed_sql:
            pytest.skip("no seed_sql: warmers are compared on seed rows")

        async def run() -> None:
            async with db.applied(thorbis_pg_dsn, plugin, target.seed_sql) as conn:
                await isolation.check_warmers_isolate_tenants(
                    conn, thorbis_standalone_redis_url, plugin, target.tenants[0])

        run_async(run)

    # ---- 8. permissions

    def test_permissions_are_unique_and_namespaced(
        self, thorbis_contract_plugin: LoadedPlugin
    ) -> None:
        """Permission names are unique and each is ``<namespace>.<name>[.<more>]``."""
        checks.check_permissions(thorbis_contract_plugin)

    # ---- 9. coexistence

    def test_coexists_with_every_installed_plugin(
        self, thorbis_contract_target: ContractTarget, thorbis_contract_plugin: LoadedPlugin
    ) -> None:
        """Loaded in one manager with every other installed plugin (as a host loading
        all verticals does): no namespace, key schema, permission or view collides, and
        for any tenant no key of any plugin's schema equals, or parses as, another's."""
        others, error = run_async(lambda: _load_with_installed(thorbis_contract_target))
        if error is not None:
            pytest.fail(f"plugin {thorbis_contract_target.label!r} does not load together "
                        f"with the installed plugins:\n{error}", pytrace=False)
        # Its own relations in its own schema whether or not another plugin is there
        # (found as a plugin author would: alone, as the docs run it, it was skipped).
        checks.check_relations_namespaced([thorbis_contract_plugin])
        if not others:
            pytest.skip("no other plugin is installed")
        checks.check_relations_namespaced([thorbis_contract_plugin, *others])
        schemas = [s for p in (thorbis_contract_plugin, *others) for s in p.schemas]
        if schemas:
            checks.check_key_isolation(schemas, max_examples=self.max_examples * 2)


async def _start_app(target: ContractTarget, redis_url: str) -> PluginLoadError | None:
    """Start a :class:`CacheApp` holding only the target (as a host does), then close
    it; the start's error, if any."""
    from thorbis_cache.app import CacheApp  # the app pulls in the whole runtime

    app = CacheApp(redis_url, keyring=KeyRing.generate())
    name = target.name
    if target.obj is not None:
        name = name or getattr(target.obj, "__name__", None) or (
            app.plugins.pluggy_manager.get_canonical_name(target.obj))
        app.register(target.obj, name)
    try:
        await app.start([str(name)])
    except PluginLoadError as exc:
        return exc
    finally:
        await app.aclose()
    return None


async def _load_with_installed(
    target: ContractTarget,
) -> tuple[list[LoadedPlugin], PluginLoadError | None]:
    """Load ``target`` and every other installed plugin with one fresh manager.

    :returns: the other plugins, and the load error if there was one.
    """
    manager = PluginManager()
    name = target.name
    if target.obj is not None:
        name = name or getattr(target.obj, "__name__", None) or (
            manager.pluggy_manager.get_canonical_name(target.obj))
        manager.add(target.obj, name)
    names = [str(name)]
    for ep in manager.available():
        if ep.name in names:
            continue
        if target.obj is not None:
            # The object under test may also be installed (an example run in-process):
            # pluggy refuses one object under two names, and it is the same plugin.
            try:
                same = ep.load() is target.obj
            except Exception:  # a broken entry point: the manager reports it below
                same = False
            if same:
                continue
        names.append(ep.name)
    try:
        loaded = await manager.load(names)
    except PluginLoadError as exc:
        return [], exc
    return [p for p in loaded if p.name != name], None


async def _open_cache(url: str, registry: SchemaRegistry, keyring: KeyRing) -> Cache:
    return Cache.from_url(url, registry, keyring=keyring)


@contextlib.contextmanager
def _real_cache(url: str, plugin: LoadedPlugin) -> Iterator[tuple[LoopThread, Cache]]:
    """A loop thread and a :class:`Cache` on ``url`` holding the plugin's schemas (a
    fresh key ring), closed on exit."""
    registry = SchemaRegistry()
    for schema in plugin.schemas:
        registry.register(schema, owner=plugin.name)
    with LoopThread() as loop:
        cache = loop.run(_open_cache(url, registry, KeyRing.generate()))
        try:
            yield loop, cache
        finally:
            loop.run(cache.aclose())


def _need_schemas(plugin: LoadedPlugin) -> tuple[Any, ...]:
    if not plugin.schemas:
        pytest.skip(f"plugin {plugin.name!r} declares no key schemas")
    return plugin.schemas


def contract_test_names() -> list[str]:
    """Names of the contract's test methods, in definition order (for docs and tools)."""
    return [name for name in vars(PluginContract) if name.startswith("test_")]
