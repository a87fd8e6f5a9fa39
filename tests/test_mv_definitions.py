"""A plugin's changed view definition reaches an existing database: applying its SQL
recreates a view whose fingerprint differs (or that has none), leaves an unchanged one
alone, refuses to drop a view another object depends on (naming it), and marks the
recreated view's cache tags pending."""

from __future__ import annotations

import asyncpg
import pytest

from thorbis_cache import PluginInfo, hookimpl
from thorbis_cache.errors import PluginLoadError
from thorbis_cache.plugins.declarations import MaterializedView, SqlScript
from thorbis_cache.plugins.hookspecs import HOOK_API_VERSION
from thorbis_cache.plugins.manager import LoadedPlugin, PluginManager
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.sql_apply import apply_plugin_sql

TABLE = "CREATE SCHEMA IF NOT EXISTS vd; CREATE TABLE IF NOT EXISTS vd.t (tenant_id text, id int)"


class _Plugin:
    def __init__(self, query: str) -> None:
        self.view = MaterializedView("vd.counts", query, unique_index=("tenant_id",),
                                     tags=("vd.counts",))

    @hookimpl
    def register_plugin_info(self) -> PluginInfo:
        return PluginInfo("vd", HOOK_API_VERSION, title="view definitions")

    @hookimpl
    def register_sql(self) -> list[SqlScript]:
        return [SqlScript("vd.tables", TABLE)]

    @hookimpl
    def register_materialized_views(self) -> list[MaterializedView]:
        return [self.view]


async def _load(query: str) -> LoadedPlugin:
    manager = PluginManager()
    manager.add(_Plugin(query), "view_defs")
    [plugin] = await manager.load(["view_defs"])
    return plugin


V1 = "SELECT tenant_id, count(*) AS n FROM vd.t GROUP BY tenant_id"
V2 = "SELECT tenant_id, count(*) AS n, max(id) AS top FROM vd.t GROUP BY tenant_id"


async def _columns(conn: asyncpg.Connection) -> list[str]:
    return [r["attname"] for r in await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'vd.counts'::regclass "
        "AND attnum > 0 ORDER BY attnum")]


async def test_changed_definitions_are_recreated_and_unchanged_ones_left_alone(
        thorbis_pg_dsn: str) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await migrate(conn)
        await apply_plugin_sql(conn, [await _load(V1)])
        assert await _columns(conn) == ["tenant_id", "n"]
        await conn.execute("INSERT INTO vd.t VALUES ('acme', 1), ('acme', 2)")
        await conn.execute("INSERT INTO thorbis.mv_state (view, plugin) "
                           "VALUES ('vd.counts', 'view_defs')")
        # Same definition: nothing is recreated (the view still holds no rows).
        await apply_plugin_sql(conn, [await _load(V1)])
        assert await conn.fetchval("SELECT count(*) FROM vd.counts") == 0
        assert not await conn.fetchval("SELECT tags_pending FROM thorbis.mv_state")
        # A new definition: recreated, populated, its tags marked pending.
        await apply_plugin_sql(conn, [await _load(V2)])
        assert await _columns(conn) == ["tenant_id", "n", "top"]
        assert [tuple(r) for r in await conn.fetch("SELECT * FROM vd.counts")] == [
            ("acme", 2, 2)]
        assert await conn.fetchval("SELECT tags_pending FROM thorbis.mv_state")
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'counts_uniq'") == 1
        # A view made by hand (no fingerprint) is brought to the declaration too.
        await conn.execute("COMMENT ON MATERIALIZED VIEW vd.counts IS NULL")
        await apply_plugin_sql(conn, [await _load(V2)])
        comment = await conn.fetchval("SELECT obj_description('vd.counts'::regclass)")
        assert str(comment).startswith("thorbis:definition=")
    finally:
        await conn.close()


async def test_a_view_others_depend_on_is_not_dropped_and_the_failure_names_it(
        thorbis_pg_dsn: str) -> None:
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await apply_plugin_sql(conn, [await _load(V1)])
        await conn.execute("CREATE VIEW vd.report AS SELECT * FROM vd.counts")
        with pytest.raises(PluginLoadError) as caught:
            await apply_plugin_sql(conn, [await _load(V2)])
        [problem] = caught.value.problems
        assert (problem.plugin, problem.hook) == ("view_defs", "register_materialized_views")
        assert "materialized view 'vd.counts'" in problem.message
        assert "DROP MATERIALIZED VIEW" in problem.message
        assert "depend" in problem.message  # PostgreSQL's message and hint
        assert await _columns(conn) == ["tenant_id", "n"]  # rolled back, untouched
    finally:
        await conn.close()
