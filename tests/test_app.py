"""CacheApp end to end on real Redis (both topologies) and PostgreSQL; plugin SQL applied
per plugin in one transaction; the SQL statement splitter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from importlib.metadata import EntryPoint
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from plugins_fixtures import broken, good
from plugins_fixtures.broken_sql import BadDbReferences, BrokenSql, FailingStartup

import thorbis_cache.plugins.manager
from thorbis_cache import CacheApp, KeyRing, NearCache
from thorbis_cache.errors import ConfigurationError, PluginLoadError, UnknownPatternError
from thorbis_cache.plugins.manager import ENTRY_POINT_GROUP, PluginManager
from thorbis_cache.postgres import apply_plugin_sql, check_rules_against_db, split_sql

AppFactory = Callable[..., CacheApp]


@pytest.fixture
async def make_app() -> AsyncIterator[AppFactory]:
    """Build CacheApps (the good plugin registered as ``tst``); all closed afterwards."""
    apps: list[CacheApp] = []
    keyring = KeyRing.generate()  # shared: every app of a test reads the others' values

    def make(url: str, dsn: str | None = None, **plugins: object) -> CacheApp:
        app = CacheApp(url, keyring=keyring, postgres_dsn=dsn)
        for name, plugin in {"tst": good, **plugins}.items():
            app.register(plugin, name)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.aclose()


async def fetchval(dsn: str, query: str, *args: object) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


# --------------------------------------------------------------------------- end to end


async def test_start_applies_sql_runs_patterns_and_notifies(
    make_app: AppFactory, thorbis_redis_url: str, thorbis_pg_dsn: str
) -> None:
    good.started.clear()
    app = await make_app(thorbis_redis_url, thorbis_pg_dsn).start(["tst"], apply_sql=True)
    assert good.started == [app]
    assert app.cache.registry is app.plugins.registry
    assert app.plugins.registry.owner("tst.item") == "tst"

    item = good.Item(7, "pump", "open")
    await app.cache.set(good.ITEM.key("acme", item_id=7), item)
    item_or_none = app.pattern("tst.item_or_none")
    assert await item_or_none("acme", item_id=7) == item
    assert await item_or_none("other", item_id=7) is None
    with pytest.raises(UnknownPatternError):
        app.pattern("tst.nope")

    # Everything the plugin declared exists, the view with its unique index.
    assert await fetchval(thorbis_pg_dsn, "SELECT to_regclass('tst.items')::text") == "tst.items"
    assert await fetchval(thorbis_pg_dsn, "SELECT tst.label(ROW('t', 1, 'a', 'b')::tst.items)"
                          ) == "a;b"
    assert await fetchval(
        thorbis_pg_dsn, "SELECT indexdef FROM pg_indexes WHERE indexname = 'item_counts_uniq'"
    ) == "CREATE UNIQUE INDEX item_counts_uniq ON tst.item_counts USING btree (tenant_id, status)"

    # Applying again (a second host process starting) is a no-op.
    again = await make_app(thorbis_redis_url, thorbis_pg_dsn).start(["tst"], apply_sql=True)
    assert await again.pattern("tst.item_or_none")("acme", item_id=7) == item
    assert good.started == [app, again]


async def test_apply_plugin_sql_on_a_connection_is_idempotent_and_checks_clean(
    thorbis_pg_dsn: str,
) -> None:
    manager = PluginManager()
    manager.add(good, "tst")
    loaded = await manager.load(["tst"])
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await apply_plugin_sql(conn, loaded)
        await conn.execute("INSERT INTO tst.items VALUES ('acme', 1, 'x', 'open')")
        await apply_plugin_sql(conn, loaded)
        assert await conn.fetchval("SELECT count(*) FROM tst.items") == 1
        assert await check_rules_against_db(conn, loaded) == []
        # The view refreshes concurrently, as declared.
        await conn.execute("REFRESH MATERIALIZED VIEW tst.item_counts")
        await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY tst.item_counts")
        assert await conn.fetchval("SELECT n FROM tst.item_counts") == 1
    finally:
        await conn.close()


async def test_broken_sql_names_the_statement_and_is_rolled_back(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = make_app(thorbis_standalone_redis_url, thorbis_pg_dsn, bsql=BrokenSql)
    good.started.clear()
    with pytest.raises(PluginLoadError) as info:
        await app.start(["tst", "bsql"], apply_sql=True)
    [problem] = info.value.problems
    assert (problem.plugin, problem.hook) == ("bsql", "register_sql")
    assert problem.message.startswith(
        "SQL script 'bsql.tables': statement failed: \"CREATE TABLE bsql.bad (id nosuchtype, "
        "note text DEFAULT 'x;y')\": PostgreSQL 42704: type \"nosuchtype\" does not exist"
    )
    # The start's one transaction was rolled back: the broken plugin's SQL and the good
    # plugin's too (a refused start changes nothing).
    assert await fetchval(thorbis_pg_dsn, "SELECT to_regclass('bsql.kept')") is None
    assert await fetchval(
        thorbis_pg_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'bsql'") == 0
    assert await fetchval(thorbis_pg_dsn, "SELECT to_regclass('tst.items')") is None
    # Nothing of the start is kept: no plugin, no cache, no startup notification.
    assert app.plugins.plugins == {}
    assert len(app.plugins.registry) == 0
    assert good.started == []
    with pytest.raises(ConfigurationError, match=r"after `await app\.start"):
        _ = app.cache
    # The app can start again without the broken plugin.
    await app.start(["tst"], apply_sql=True)
    assert list(app.plugins.plugins) == ["tst"]


async def test_rules_and_views_are_checked_against_the_database(
    make_app: AppFactory, thorbis_standalone_redis_url: str, thorbis_pg_dsn: str
) -> None:
    app = make_app(thorbis_standalone_redis_url, thorbis_pg_dsn, brc=BadDbReferences)
    with pytest.raises(PluginLoadError) as info:
        await app.start(["brc"], apply_sql=True)
    messages = [(p.plugin, p.hook, p.message) for p in info.value.problems]
    rules, views = "register_invalidation_rules", "register_materialized_views"
    assert messages == [
        ("brc", rules, "invalidation rule 'brc.missing_table': table 'brc.missing' does not "
                       "exist (no table, partitioned table, view or materialized view)"),
        ("brc", rules, "invalidation rule 'brc.columns': tenant_column 'tenant' is not a column "
                       "of partitioned table 'brc.orders' (columns: tenant_id, id, status)"),
        ("brc", rules, "invalidation rule 'brc.columns': significant column 'state' is not a "
                       "column of partitioned table 'brc.orders' (columns: tenant_id, id, "
                       "status)"),
        ("brc", rules, "invalidation rule 'brc.columns': target 'brc.order' params['order_id'] "
                       "'order_no' is not a column of partitioned table 'brc.orders' (columns: "
                       "tenant_id, id, status)"),
        ("brc", views, "materialized view 'brc.counts': source 'brc.nowhere' does not exist"),
        ("brc", views, "materialized view 'brc.counts' refreshes concurrently but has no unique "
                       "index on plain columns without a WHERE clause (REFRESH ... CONCURRENTLY "
                       "would fail)"),
    ]
    assert app.plugins.plugins == {}


# --------------------------------------------------------------------------- lifecycle


async def test_a_failing_on_startup_undoes_the_start(
    make_app: AppFactory, thorbis_standalone_redis_url: str
) -> None:
    app = make_app(thorbis_standalone_redis_url, fst=FailingStartup)
    with pytest.raises(PluginLoadError) as info:
        await app.start(["tst", "fst"])
    [problem] = info.value.problems
    assert str(problem) == ("plugin 'fst', on_startup: raised ConnectionError: warm-up service "
                            "unreachable")
    assert app.plugins.plugins == {}
    with pytest.raises(ConfigurationError):
        _ = app.cache


async def test_a_start_that_failed_is_tried_again_with_its_near_cache(
    thorbis_standalone_redis_url: str
) -> None:
    """Found as a host would: the retry was refused ("a NearCache belongs to one
    Cache"), the failed start's cache keeping the L1 it had been given."""
    app = CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(), near=NearCache())
    app.register(good, "tst")
    app.register(FailingStartup, "fst")
    with pytest.raises(PluginLoadError):
        await app.start(["tst", "fst"])
    await app.start(["tst"])
    try:
        assert app.cache.near is app.near
        assert await app.cache.near_ready(10)
    finally:
        await app.aclose()


async def test_a_closed_app_says_so_and_its_cache_starts_nothing_again(
    thorbis_standalone_redis_url: str
) -> None:
    """A handler still holding the cache past the app's close (found as a host would):
    a read restarted the event subscriber, a task nothing would close; and the app
    said it was not started yet."""
    app = CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(), near=NearCache())
    app.register(good, "tst")
    await app.start(["tst"])
    cache = app.cache
    assert await cache.near_ready(10)
    await app.aclose()
    with pytest.raises(ConfigurationError, match="was closed"):
        _ = app.cache
    assert await cache.get(good.ITEM.key("acme", item_id=1)) is None  # Redis, not L1
    assert not await cache.near_ready(0.5)
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("thorbis-events")] == []
    await cache.aclose()


async def test_start_refuses_misuse(make_app: AppFactory, thorbis_standalone_redis_url: str
                                    ) -> None:
    app = make_app(thorbis_standalone_redis_url)
    with pytest.raises(ConfigurationError, match="needs CacheApp\\(postgres_dsn"):
        await app.start(apply_sql=True)
    await app.start(["tst"])
    with pytest.raises(ConfigurationError, match="started once"):
        await app.start(["tst"])


async def test_a_sensitive_schema_without_keyring_fails_the_start(
    thorbis_standalone_redis_url: str,
) -> None:
    app = CacheApp(thorbis_standalone_redis_url)
    app.register(good, "tst")
    with pytest.raises(ConfigurationError, match=r"'tst\.item' is sensitive"):
        await app.start(["tst"])
    assert app.plugins.plugins == {}


async def test_a_broken_plugin_fails_the_start_with_every_problem(
    make_app: AppFactory, thorbis_standalone_redis_url: str
) -> None:
    app = make_app(thorbis_standalone_redis_url, **broken.PLUGINS)
    with pytest.raises(PluginLoadError) as info:
        await app.start(["tst", *broken.PLUGINS])
    assert {p.plugin for p in info.value.problems} == set(broken.PLUGINS)
    assert app.plugins.plugins == {}


async def test_async_with_starts_every_plugin_and_closes(
    monkeypatch: pytest.MonkeyPatch, thorbis_standalone_redis_url: str
) -> None:
    installed = [EntryPoint(name="ep", value="plugins_fixtures.broken:FutureApi",
                            group=ENTRY_POINT_GROUP)]
    monkeypatch.setattr(thorbis_cache.plugins.manager, "entry_points",
                        lambda *, group: installed if group == ENTRY_POINT_GROUP else [])
    app = CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate())
    app.register(good, "tst")
    with pytest.raises(PluginLoadError, match="plugin 'ep', register_plugin_info"):
        async with app:
            pass  # pragma: no cover
    installed.clear()
    async with app:
        assert list(app.plugins.plugins) == ["tst"]
        await app.cache.set(good.ITEM.key("acme", item_id=1), good.Item(1, "a", "b"))
    with pytest.raises(ConfigurationError):
        _ = app.cache


# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    ("script", "statements"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT 1", ["SELECT 1"]),
        ("  ;; \n ; ", []),
        ("-- only a comment\n/* and another; */", []),
        ("SELECT ';' -- ;\n; SELECT 2", ["SELECT ';' -- ;", "SELECT 2"]),
        ("SELECT 'it''s;'; SELECT 2", ["SELECT 'it''s;'", "SELECT 2"]),
        ("SELECT E'it\\'s;'; SELECT 2", ["SELECT E'it\\'s;'", "SELECT 2"]),
        ("SELECT 'a\\'; SELECT 2", ["SELECT 'a\\'", "SELECT 2"]),  # standard strings
        ('SELECT 1 AS "a;""b"; SELECT 2', ['SELECT 1 AS "a;""b"', "SELECT 2"]),
        ("SELECT $$a;$b$$; SELECT 2", ["SELECT $$a;$b$$", "SELECT 2"]),
        ("DO $x$ BEGIN; $$;$$ END $x$; SELECT 2", ["DO $x$ BEGIN; $$;$$ END $x$", "SELECT 2"]),
        ("SELECT $1; SELECT a$b$; SELECT 2", ["SELECT $1", "SELECT a$b$", "SELECT 2"]),
        ("/* a /* nested; */ still; */ SELECT 1; SELECT 2",
         ["/* a /* nested; */ still; */ SELECT 1", "SELECT 2"]),
        ("SELECT 'unterminated; SELECT 2", ["SELECT 'unterminated; SELECT 2"]),
    ],
)
def test_split_sql(script: str, statements: list[str]) -> None:
    assert split_sql(script) == statements


_words = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
_text = st.text(alphabet=st.sampled_from(list("ab ;'\"$-/*\\\nE")), max_size=12)
_tags = st.sampled_from(["", "body", "x1"])


@st.composite
def _dollar(draw: st.DrawFn) -> str:
    tag = f"${draw(_tags)}$"
    # The body may hold anything but an earlier end of the quote.
    body = draw(_text.filter(lambda t: (t + tag).find(tag) == len(t)))
    return f"{tag}{body}{tag}"


_tokens = st.one_of(
    _words,
    _text.map(lambda t: "'" + t.replace("'", "''") + "'"),
    _text.map(lambda t: "E'" + t.replace("\\", "\\\\").replace("'", "\\'") + "'"),
    _text.map(lambda t: '"' + t.replace('"', '""') + '"'),
    _dollar(),
    _text.filter(lambda t: "\n" not in t).map(lambda t: "-- " + t + "\n"),
    _text.filter(lambda t: "*/" not in t and "/*" not in t and not t.endswith("/"))
    .map(lambda t: "/*" + t + "*/"),
)
_statements = st.lists(
    st.tuples(_words, st.lists(_tokens, max_size=6)).map(lambda p: " ".join([p[0], *p[1]])),
    max_size=5,
)


@given(_statements)
def test_split_sql_finds_exactly_the_statements_joined(statements: list[str]) -> None:
    assert split_sql(";\n".join(statements)) == [s.strip() for s in statements]

