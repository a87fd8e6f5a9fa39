"""What a setup takes away from the database's capture: nothing, unless ``db init
--prune`` (``setup_database(prune=True)``) makes it exactly the loaded plugins'.

Found as a user would, removing a plugin (or a rule) and running ``db init`` again:
under trigger capture its table kept its capture triggers, so every write of the host
went on paying for an outbox row no rule read. Under logical capture the other way
round: every setup set the publication to its own tables, so a process of the
earlier release (or with fewer plugins) starting with ``apply_sql=True`` took a table
out of the publication that the others' rules watch, and its changes went uncaptured.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from capture_env import Env, capture_env
from core_testing import run_cli
from plugins_fixtures import good

from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres.rules_record import recorded_rules
from thorbis_cache.postgres.setup import DatabaseSetup, setup_database

TABLE = "tst.items"


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with capture_env(request.param, thorbis_pg_dsn, thorbis_standalone_redis_url
                           ) as env:
        yield env


async def _setup(env: Env, plugins: list[str], *, prune: bool = False) -> DatabaseSetup:
    manager = PluginManager()
    manager.add(good, "tst")
    await manager.load(plugins)
    slot = "main" if env.capture is None else env.capture.slot.removeprefix("thorbis_")
    return await setup_database(env.dsn, manager, capture=env.mode,  # type: ignore[arg-type]
                                slot=slot, prune=prune)


async def _captured(env: Env) -> dict[str, bool]:
    """Whether tst.items is captured, by each thing capture leaves on it."""
    triggers = await env.conn.fetchval(
        "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE t.tgrelid = $1::regclass AND n.nspname = 'thorbis'", TABLE)
    published = await env.conn.fetchval(
        "SELECT count(*) FROM pg_publication_tables WHERE schemaname || '.' || tablename "
        "= $1", TABLE)
    recorded = await env.conn.fetchval(
        "SELECT count(*) FROM thorbis.captured_tables WHERE table_name = $1", TABLE)
    rules = [r.name for r in await recorded_rules(env.conn) if r.table == TABLE]
    return {"capture": bool(triggers if env.mode == "triggers" else published),
            "recorded": bool(recorded), "rules": bool(rules)}


async def test_a_setup_with_fewer_plugins_takes_nothing_away(env: Env) -> None:
    await _setup(env, ["home_services", "tst"])
    assert await _captured(env) == {"capture": True, "recorded": True, "rules": True}
    # A process of the same database that loads home_services only (an earlier
    # release, or another application) starting with apply_sql=True.
    done = await _setup(env, ["home_services"])
    assert done.uncaptured == ()
    assert await _captured(env) == {"capture": True, "recorded": True, "rules": True}


async def test_prune_takes_the_capture_off_what_no_rule_reads(env: Env) -> None:
    await _setup(env, ["home_services", "tst"])
    if env.mode == "logical":  # a rule reads an old non-key value: db init set FULL
        assert await env.conn.fetchval(
            "SELECT relreplident::text FROM pg_class WHERE oid = $1::regclass", TABLE) == "f"
    done = await _setup(env, ["home_services"], prune=True)
    assert done.uncaptured == (TABLE,)
    assert await _captured(env) == {"capture": False, "recorded": False, "rules": False}
    assert await env.conn.fetchval(
        "SELECT relreplident::text FROM pg_class WHERE oid = $1::regclass", TABLE) == "d"
    # The host's writes there cost nothing any more.
    before = await env.conn.fetchval("SELECT count(*) FROM thorbis.outbox")
    await env.conn.execute("INSERT INTO tst.items (tenant_id, id, status) "
                           "VALUES ('acme', 1, 'new')")
    assert await env.conn.fetchval("SELECT count(*) FROM thorbis.outbox") == before
    assert "hs.customers" in {r.table for r in await recorded_rules(env.conn)}


async def test_db_init_prune_says_what_it_took_off(env: Env) -> None:
    await _setup(env, ["home_services", "tst"])
    out = await asyncio.to_thread(env.db_init)  # without --prune: nothing taken off
    assert "capture taken off" not in out
    assert (await _captured(env))["capture"]
    args = ["db", "init", "--dsn", env.dsn, "--plugin", "home_services", "--capture",
            env.mode, "--prune"]
    if env.capture is not None:
        args += ["--slot", env.capture.slot.removeprefix("thorbis_")]
    out = await asyncio.to_thread(run_cli, *args)
    assert f"capture taken off {TABLE}: no rule or view of these plugins reads it" in out
    assert not (await _captured(env))["capture"]
