"""A ``db init`` with nothing to change takes no lock that a host's writer holds.

Found as a user would: an application starting with ``apply_sql=True`` (or a release
job running ``db init``) while a batch job of the host held a transaction open on
``hs.customers``. Nothing had changed since the last setup, yet the start waited for the
batch job: the plugin's ``CREATE INDEX IF NOT EXISTS`` takes a lock that conflicts with
every writer before it finds the index there, and the capture triggers were dropped and
created again. Each attempt held the host's other writes of the table for the lock
timeout, and after the attempts the start failed with ``TableLockedError``: no instance
of the application could start while the batch job ran.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import attrs
import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL

from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres import ddl_locks
from thorbis_cache.postgres.sql_apply import sql_digest


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with capture_env(request.param, thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        await env.conn.execute(CUSTOMER_SQL, "acme", 3)
        yield env


@contextlib.asynccontextmanager
async def _batch_jobs(env: Env) -> AsyncIterator[None]:
    """Host transactions holding a write lock on every watched table, and a refresh
    of a view, until the block ends."""
    jobs = [await asyncpg.connect(env.dsn) for _ in range(2)]
    try:
        async with jobs[0].transaction():
            await jobs[0].execute("UPDATE hs.customers SET phone = 'job' WHERE id = 1")
            for table in ("hs.work_orders", "hs.technicians", "hs.invoices",
                          "hs.service_areas", "hs.quality_control_inspections"):
                await jobs[0].execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
            yield
    finally:
        for job in jobs:
            await job.close()


async def test_a_db_init_with_nothing_to_change_never_waits_for_the_hosts_writers(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One attempt: any lock that conflicts with the batch job fails the run.
    monkeypatch.setattr(ddl_locks, "LOCK_TIMEOUT", 0.3)
    monkeypatch.setattr(ddl_locks, "LOCK_ATTEMPTS", 1)
    async with _batch_jobs(env):
        out = await asyncio.to_thread(env.db_init)
    assert "Traceback" not in out
    # And it still captures.
    async with env.worker() as worker:
        await env.drained(worker, 2)


@pytest.fixture
async def triggers_env(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
                       ) -> AsyncIterator[Env]:
    async with capture_env("triggers", thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        yield env


_TRIGGERS = """
SELECT t.tgname::text, t.tgenabled::text, t.tgtype::int FROM pg_trigger t
WHERE t.tgrelid = 'hs.customers'::regclass AND t.tgname LIKE 'thorbis_capture%'
ORDER BY 1
"""


_FUNCTIONS = """
SELECT p.proname::text, p.xmin::text FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'thorbis' AND p.proname LIKE 'capture\\_%\\_\\_%' ORDER BY 1
"""


async def test_unchanged_sql_is_left_alone_and_a_changed_one_applied(triggers_env: Env) -> None:
    env = triggers_env
    functions = await env.conn.fetch(_FUNCTIONS)
    assert len(functions) >= 10
    out = await asyncio.to_thread(env.db_init)
    assert "SQL unchanged, left alone (home_services)" in out, out
    # Nor are the capture functions written again (each session would compile them).
    assert await env.conn.fetch(_FUNCTIONS) == functions
    # A new release of the plugin: its SQL's digest differs from the one recorded.
    await env.conn.execute("UPDATE thorbis.plugin_sql SET digest = 'an earlier release' "
                           "WHERE plugin = 'home_services'")
    out = await asyncio.to_thread(env.db_init)
    assert "SQL applied (home_services)" in out, out
    row = await env.conn.fetchrow("SELECT digest, distribution, version FROM thorbis.plugin_sql "
                                  "WHERE plugin = 'home_services'")
    plugin = env.app.plugins.plugins["home_services"]
    assert tuple(row) == (sql_digest(plugin), plugin.distribution, plugin.version)
    # Asked for: applied whatever the record says.
    out = await asyncio.to_thread(env.db_init, 0, "--reapply-sql")
    assert "SQL applied (home_services)" in out, out


async def test_what_was_dropped_or_changed_by_hand_is_made_again(triggers_env: Env) -> None:
    env = triggers_env
    before = await env.conn.fetch(_TRIGGERS)
    await env.conn.execute("DROP INDEX hs.customers_status_idx")
    await env.conn.execute("DROP MATERIALIZED VIEW hs.technician_performance")
    await env.conn.execute("ALTER TABLE hs.customers DISABLE TRIGGER thorbis_capture_insert")
    await env.conn.execute(  # the same name, another definition
        "CREATE OR REPLACE TRIGGER thorbis_capture_delete AFTER DELETE ON hs.customers "
        "FOR EACH ROW EXECUTE FUNCTION thorbis.capture_truncate('hs.customers')")
    await env.conn.execute("ALTER TABLE hs.invoices ENABLE TRIGGER thorbis_capture_update")
    out = await asyncio.to_thread(env.db_init)
    assert "SQL applied (home_services)" in out, out
    assert await env.conn.fetchval("SELECT to_regclass('hs.customers_status_idx') IS NOT NULL")
    assert await env.conn.fetchval(
        "SELECT to_regclass('hs.technician_performance') IS NOT NULL")
    assert await env.conn.fetch(_TRIGGERS) == before
    assert await env.conn.fetchval(
        "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = 'hs.invoices'::regclass "
        "AND tgname = 'thorbis_capture_update'") == "A"


async def test_the_sql_digest_follows_the_scripts_and_the_views() -> None:
    [plugin] = await PluginManager().load(["home_services"])
    assert sql_digest(plugin) == sql_digest(attrs.evolve(plugin))
    script = plugin.sql[0]
    edited = attrs.evolve(script, sql=script.sql + "\n-- an edit")
    assert sql_digest(attrs.evolve(plugin, sql=(edited, *plugin.sql[1:]))) != sql_digest(plugin)
    assert sql_digest(attrs.evolve(plugin, sql=(script, edited))) \
        != sql_digest(attrs.evolve(plugin, sql=(edited, script)))
    view = plugin.views[0]
    other = attrs.evolve(view, query=view.query.replace("SELECT", "SELECT DISTINCT", 1))
    assert sql_digest(attrs.evolve(plugin, views=(other, *plugin.views[1:]))) \
        != sql_digest(plugin)


async def test_a_later_releases_sql_is_not_put_back_by_an_earlier_one(
    triggers_env: Env,
) -> None:
    """A rolling deploy: the new release's db init applied its SQL (a view defined
    otherwise), and a process of the earlier release starts again meanwhile (a crash,
    a scale-up). It put its own view definition back, dropping the new release's view
    under the new release's readers; now it leaves a later release's SQL alone."""
    env = triggers_env
    plugin = env.app.plugins.plugins["home_services"]
    later = "99.0" if plugin.version is None else f"{plugin.version}.post1"
    await env.conn.execute("UPDATE thorbis.plugin_sql SET digest = 'the new release', "
                           "version = $1 WHERE plugin = 'home_services'", later)
    await env.conn.execute("COMMENT ON MATERIALIZED VIEW hs.customer_summary IS "
                           "'thorbis:definition=the-new-release'")
    out = await asyncio.to_thread(env.db_init)
    assert "SQL of a later release there, left alone (home_services)" in out, out
    assert await env.conn.fetchval(
        "SELECT obj_description('hs.customer_summary'::regclass, 'pg_class')"
    ) == "thorbis:definition=the-new-release"
    # Its own version (or an earlier one) recorded: applied as before.
    await env.conn.execute("UPDATE thorbis.plugin_sql SET version = '0.0.1' "
                           "WHERE plugin = 'home_services'")
    out = await asyncio.to_thread(env.db_init)
    assert "SQL applied (home_services)" in out, out
    assert await env.conn.fetchval(
        "SELECT obj_description('hs.customer_summary'::regclass, 'pg_class')"
    ) != "thorbis:definition=the-new-release"
