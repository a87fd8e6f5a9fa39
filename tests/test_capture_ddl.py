"""A host's migration against change capture (``thorbis_cache.postgres.capture_ddl``),
with real PostgreSQL and Redis and the home_services plugin, under both captures.

Found as a user would: a migration renamed a column an invalidation rule reads
(``ALTER TABLE hs.customers RENAME COLUMN account_status TO status``). With capture
triggers, every later write of the table failed (``column o.account_status does not
exist``): the cache took the host's writes down. With logical capture, the worker
stopped on the same error and invalidated nothing more, for any table. Now the writes
go on, the worker goes on, the changes are invalidated conservatively and it is said;
``db init`` with matching rules puts the generated capture back. And a TRUNCATE of a
watched table, which no row trigger sees, invalidates every tenant's entries of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL, NOW, TECH_SQL, WORK_ORDER_SQL, run_cli
from thorbis_home_services.schemas import (
    TAG_CUSTOMER_LISTS,
    TAG_SCHEDULES,
    TECHNICIAN_SCHEDULE,
)

from thorbis_cache.invalidation.batch import Incomplete
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres.capture_ddl import (
    EVENT_TRIGGER,
    CaptureDrift,
    drifted_captures,
    ensure_ddl_guard,
)
from thorbis_cache.postgres.connection import connect
from thorbis_cache.postgres.migrations import migrate


async def _cache_two_tenants(env: Env, worker: OutboxWorker) -> None:
    """Customer 1 of acme and of globex, in the table and cached (stale)."""
    await env.conn.execute(CUSTOMER_SQL, "acme", 1)
    await env.conn.execute(CUSTOMER_SQL, "globex", 1)
    await worker.drain()
    await env.cache_customer(1)
    await env.cache_customer(1, "globex")


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with capture_env(request.param, thorbis_pg_dsn,
                           thorbis_standalone_redis_url) as env:
        yield env


async def test_a_migration_renaming_watched_columns_never_breaks_writes(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    conn = env.conn
    await conn.execute(CUSTOMER_SQL, "acme", 2)
    await conn.execute(TECH_SQL, "acme", 10)
    await conn.execute(WORK_ORDER_SQL, "acme", 100, 1, 10, NOW)
    async with env.worker() as worker:
        await worker.drain()
        await env.cache_customer(1)
        await env.cache_customer(2)

        # A significant column of the customer-list rule goes.
        await conn.execute("ALTER TABLE hs.customers RENAME COLUMN account_status TO status")
        assert any("hs.customers no longer has column(s) account_status" in n
                   for n in env.notices), env.notices
        # Said once: the stand-in's own ALTER TABLE fired the event trigger again, which
        # installed it again, ~250 times until PostgreSQL's stack limit (3-5 s under the
        # migration's ACCESS EXCLUSIVE lock, 500+ warnings).
        said = [n for n in env.notices if "thorbis-cache" in n]
        assert len(said) == 1, said
        await conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 1")  # writes work
        with caplog.at_level(logging.ERROR):
            (result,) = [r for r in await worker.drain() if r.claimed]
        # Its key is still built (id is there); the rule that reads the missing column
        # cannot show the change harmless, so it fires.
        assert result.keys == ("{acme}:hs.customer:1",)
        assert ("acme", TAG_CUSTOMER_LISTS) in result.tags
        assert result.incomplete == (Incomplete("hs.customers", 1, ("account_status",), ()),)
        assert "lack column(s) account_status" in caplog.text
        assert not await env.cached(1)
        assert await env.cached(2)

        # A key parameter goes: the schedule's key cannot be built, its tag goes instead.
        schedule = TECHNICIAN_SCHEDULE.key("acme", technician_id=10, day=NOW.date())
        await env.app.cache.zset(schedule).add({100: 1.0}, replace=True)
        await conn.execute(
            "ALTER TABLE hs.work_orders RENAME COLUMN assigned_technician_id TO tech_id")
        await conn.execute("UPDATE hs.work_orders SET tech_id = NULL WHERE id = 100")
        results = [r for r in await worker.drain() if r.claimed]
        assert ("acme", TAG_SCHEDULES) in {t for r in results for t in r.tags}
        assert {i.unseen for r in results for i in r.incomplete} == {
            ("assigned_technician_id",)}
        assert await env.app.cache.zset(schedule).card() == 0
        assert worker.metrics.incomplete_changes >= 2

        # INSERT and DELETE keep working too.
        await conn.execute("DELETE FROM hs.customers WHERE id = 2")
        assert "{acme}:hs.customer:2" in {k for r in await worker.drain() for k in r.keys}
    # Recorded under either capture (the event trigger); the migration said so.
    assert await drifted_captures(conn) == [
        CaptureDrift("hs.customers", ("account_status",), ()),
        CaptureDrift("hs.work_orders", ("assigned_technician_id",), ())]
    assert any("hs.work_orders no longer has column(s) assigned_technician_id" in n
               for n in env.notices), env.notices
    # The operator's health check says so, naming the tables and columns.
    out = await asyncio.to_thread(run_cli, "health", "--redis-url", env.redis_url,
                                  "--dsn", env.dsn, "--plugin", "home_services", "--json",
                                  code=1)
    check = json.loads(out)["checks"]["capture_columns"]
    assert check["status"] == "warning"
    assert check["incomplete"] == {"hs.customers": ["account_status"],
                                   "hs.work_orders": ["assigned_technician_id"]}
    assert "hs.customers no longer has column(s) account_status" in check["reason"]

    # db init with rules the tables no longer match is refused (naming the column), and
    # changes nothing: writes still work.
    refused = await asyncio.to_thread(env.db_init, 1)
    assert "account_status" in refused
    await conn.execute("UPDATE hs.customers SET phone = 'y' WHERE id = 1")

    # The columns back, db init puts the generated capture back.
    await conn.execute("ALTER TABLE hs.customers RENAME COLUMN status TO account_status")
    await conn.execute(
        "ALTER TABLE hs.work_orders RENAME COLUMN tech_id TO assigned_technician_id")
    if env.mode == "triggers":
        assert any("has every column its invalidation rules read again" in n
                   for n in env.notices)
    await asyncio.to_thread(env.db_init)
    assert await drifted_captures(conn) == []
    async with env.worker() as worker:
        await worker.drain()
        await env.cache_customer(1)
        await conn.execute("UPDATE hs.customers SET phone = 'z' WHERE id = 1")
        (result,) = [r for r in await worker.drain() if r.claimed]
        assert result.keys == ("{acme}:hs.customer:1",)
        assert result.incomplete == ()
        assert TAG_CUSTOMER_LISTS not in {t for _, t in result.tags}  # phone: insignificant
    if env.mode == "triggers":
        functions = await conn.fetch(
            "SELECT DISTINCT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgrelid = 'hs.customers'::regclass AND NOT t.tgisinternal")
        assert "capture_standin__hs__customers" not in {r[0] for r in functions}


async def test_without_its_tenant_column_a_change_reaches_every_tenant(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """The tenant column renamed: a change's tenant is unknown, so every tag its table's
    rules reach goes for every tenant (as after a lost slot), never a dead letter."""
    conn = env.conn
    async with env.worker() as worker:
        await _cache_two_tenants(env, worker)
        await conn.execute("ALTER TABLE hs.customers RENAME COLUMN tenant_id TO account_id")
        await conn.execute(
            "UPDATE hs.customers SET phone = 'x' WHERE account_id = 'acme' AND id = 1")
        with caplog.at_level(logging.ERROR):
            results = [r for r in await worker.drain() if r.claimed]
        assert not [d for r in results for d in r.dead_letters]
        tags = {t for r in results for t in r.tags}
        assert {("acme", "hs.customers"), ("globex", "hs.customers"),
                ("acme", TAG_CUSTOMER_LISTS), ("globex", TAG_CUSTOMER_LISTS)} <= tags
        assert {i.unseen for r in results for i in r.incomplete} == {("tenant_id",)}
        assert "lack column(s) tenant_id" in caplog.text
        # The other tenant's entry went too: nothing could prove it fresh.
        assert not await env.cached(1)
        assert not await env.cached(1, "globex")


# Capture triggers only: logical capture reads each change's column types from the WAL.
@pytest.mark.parametrize("env", ["triggers"], indirect=True)
async def test_a_column_that_changed_type_is_captured_exactly(env: Env) -> None:
    """The capture triggers write each value as its type was at install time: a
    migration that changes a watched column's type puts the by-name stand-in in place
    (exact: every column is still there), and db init generates them again."""
    conn = env.conn
    await conn.execute(CUSTOMER_SQL, "acme", 1)
    await conn.execute(TECH_SQL, "acme", 10)
    await conn.execute(TECH_SQL, "acme", 11)
    await conn.execute(WORK_ORDER_SQL, "acme", 100, 1, 10, NOW)
    # (A view reading the column would refuse the change: the plugin's goes first, and
    # db init below makes it again.)
    await conn.execute("DROP MATERIALIZED VIEW hs.technician_performance")
    await conn.execute(
        "ALTER TABLE hs.work_orders ALTER COLUMN assigned_technician_id TYPE integer")
    assert any("assigned_technician_id of hs.work_orders changed type" in n
               for n in env.notices), env.notices
    assert await drifted_captures(conn) == [
        CaptureDrift("hs.work_orders", (), ("assigned_technician_id",))]
    async with env.worker() as worker:
        await worker.drain()
        day = NOW.date()
        old = TECHNICIAN_SCHEDULE.key("acme", technician_id=10, day=day)
        new = TECHNICIAN_SCHEDULE.key("acme", technician_id=11, day=day)
        for key in (old, new):
            await env.app.cache.zset(key).add({100: 1.0}, replace=True)
        await conn.execute("UPDATE hs.work_orders SET assigned_technician_id = 11")
        (result,) = [r for r in await worker.drain() if r.claimed]
        # Both schedules by key, nothing by a tag: old and new rows were paired.
        assert {old.body, new.body} <= set(result.keys)
        assert ("acme", TAG_SCHEDULES) not in result.tags
        assert result.incomplete == ()
        assert await env.app.cache.zset(old).card() == 0
    out = await asyncio.to_thread(run_cli, "health", "--redis-url", env.redis_url,
                                  "--dsn", env.dsn, "--plugin", "home_services", "--json",
                                  code=1)
    check = json.loads(out)["checks"]["capture_columns"]
    assert check["retyped"] == {"hs.work_orders": ["assigned_technician_id"]}
    # db init generates the triggers for the new type.
    await asyncio.to_thread(env.db_init)
    assert await drifted_captures(conn) == []
    async with env.worker() as worker:
        await env.app.cache.zset(old).add({100: 1.0}, replace=True)
        await conn.execute("UPDATE hs.work_orders SET assigned_technician_id = 10")
        (result,) = [r for r in await worker.drain() if r.claimed]
        assert {old.body, new.body} <= set(result.keys)


async def test_a_truncate_invalidates_every_tenants_entries(env: Env) -> None:
    """Found reading the capture as a host would use it: TRUNCATE fires no row trigger,
    so a truncated table's entries stayed cached (logical capture only logged it). It
    takes every tenant's rows: every tag its rules reach goes, for every tenant."""
    conn = env.conn
    async with env.worker() as worker:
        await _cache_two_tenants(env, worker)
        await conn.execute("TRUNCATE hs.customers CASCADE")
        results = [r for r in await worker.drain() if r.claimed]
        assert not [d for r in results for d in r.dead_letters]
        tags = {t for r in results for t in r.tags}
        assert {("acme", "hs.customers"), ("globex", "hs.customers"),
                ("acme", TAG_CUSTOMER_LISTS), ("globex", TAG_CUSTOMER_LISTS)} <= tags
        assert not [i for r in results for i in r.incomplete]  # nothing missing
        assert not await env.cached(1)
        assert not await env.cached(1, "globex")


@pytest.mark.parametrize("rebuild", ["drop and create", "swap by rename", "partitioned"])
async def test_a_rebuilt_table_is_captured_again(env: Env, rebuild: str) -> None:
    """A migration that rebuilds a watched table (dropped and created again, or a copy
    renamed in its place) left the new table without capture: writes to it invalidated
    nothing, silently. The event trigger puts the capture back in the migration's
    transaction, and says so; db init makes it as usual. Rebuilt partitioned (by
    tenant), its changes were also lost under logical capture: each partition published
    them under its own name (the publication now publishes through the root)."""
    conn = env.conn
    await conn.execute(CUSTOMER_SQL, "acme", 2)
    async with env.worker() as worker:
        await worker.drain()
        async with conn.transaction():
            if rebuild == "partitioned":
                await conn.execute("CREATE TABLE hs.customers_copy (LIKE hs.customers "
                                   "INCLUDING DEFAULTS) PARTITION BY LIST (tenant_id)")
                await conn.execute("CREATE TABLE hs.customers_acme PARTITION OF "
                                   "hs.customers_copy FOR VALUES IN ('acme')")
                await conn.execute("CREATE TABLE hs.customers_others PARTITION OF "
                                   "hs.customers_copy DEFAULT")
                await conn.execute("INSERT INTO hs.customers_copy SELECT * FROM hs.customers")
            else:
                await conn.execute("CREATE TABLE hs.customers_copy AS TABLE hs.customers")
            await conn.execute("DROP TABLE hs.customers CASCADE")
            if rebuild == "drop and create":
                await conn.execute("CREATE TABLE hs.customers "
                                   "(LIKE hs.customers_copy INCLUDING ALL)")
                await conn.execute("INSERT INTO hs.customers SELECT * FROM hs.customers_copy")
                await conn.execute("DROP TABLE hs.customers_copy")
            else:
                await conn.execute("ALTER TABLE hs.customers_copy RENAME TO customers")
            await conn.execute("ALTER TABLE hs.customers ADD PRIMARY KEY (tenant_id, id)")
        assert any("hs.customers was created again" in n for n in env.notices), env.notices
        assert await drifted_captures(conn) == [CaptureDrift("hs.customers", (), (), True)]
        await env.cache_customer(1)
        await conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 1")
        keys = {k for r in await worker.drain() for k in r.keys}
        assert "{acme}:hs.customer:1" in keys
        assert not await env.cached(1)
    await asyncio.to_thread(env.db_init)
    assert await drifted_captures(conn) == []
    async with env.worker() as worker:
        await env.cache_customer(2)
        await conn.execute("UPDATE hs.customers SET phone = 'y' WHERE id = 2")
        assert "{acme}:hs.customer:2" in {k for r in await worker.drain() for k in r.keys}


async def test_a_renamed_table_is_still_captured(env: Env) -> None:
    """A table renamed by a migration keeps its capture: the triggers follow it, and
    the logical worker matches its changes by oid, also after a restart."""
    conn = env.conn
    await conn.execute(CUSTOMER_SQL, "acme", 2)
    async with env.worker() as worker:
        await worker.drain()
        await env.cache_customer(1)
        await conn.execute("ALTER TABLE hs.customers RENAME TO clients")
        await conn.execute("UPDATE hs.clients SET phone = 'x' WHERE id = 1")
        keys = {k for r in await worker.drain() for k in r.keys}
        assert keys == {"{acme}:hs.customer:1"}
        assert not await env.cached(1)
    # A worker started after the rename (logical: it finds the table by the capture's
    # record of its oid).
    async with env.worker() as worker:
        await env.cache_customer(2)
        await conn.execute("UPDATE hs.clients SET phone = 'y' WHERE id = 2")
        keys = {k for r in await worker.drain() for k in r.keys}
        assert keys == {"{acme}:hs.customer:2"}
        assert not await env.cached(2)


async def test_without_the_event_trigger_db_init_says_what_it_risks(
    thorbis_pg_dsn: str
) -> None:
    """Event triggers need a superuser: run as the application's own role (owner of its
    database), db init installs the capture triggers and warns that a migration could
    break them, and how to fix it; run once as a superuser, the event trigger is there."""
    name = f"r{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(thorbis_pg_dsn)
    await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw'")
    await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    parts = urlsplit(thorbis_pg_dsn)
    dsn = urlunsplit((parts.scheme, f"{name}:pw@{parts.hostname}:{parts.port}", f"/{name}",
                      "", ""))
    admin_dsn = urlunsplit(parts._replace(path=f"/{name}"))
    init = ("db", "init", "--plugin", "home_services", "--capture", "triggers")
    try:
        out = await asyncio.to_thread(run_cli, *init, "--dsn", dsn)
        assert "capture trigger on hs.customers" in out
        assert f"the event trigger {EVENT_TRIGGER} was not created" in out, out
        assert f"role {name!r}" in out
        assert "as a superuser" in out
        out = await asyncio.to_thread(run_cli, *init, "--dsn", admin_dsn)
        assert "event trigger" not in out
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_event_trigger WHERE evtname = $1", EVENT_TRIGGER) == 1
            # The role's own migration is now checked: its writes go on.
            await conn.execute(
                "ALTER TABLE hs.customers RENAME COLUMN account_status TO status")
            await conn.execute(CUSTOMER_SQL.replace("account_status", "status"), "acme", 1)
            assert [s.table for s in await drifted_captures(conn)] == ["hs.customers"]
            # Another team's role, with no right on the thorbis schema, alters its own
            # table: the check runs (as its owner) and never gets in the way.
            await admin.execute(f"CREATE ROLE {name}_other LOGIN PASSWORD 'pw'")
            there = await asyncpg.connect(admin_dsn)
            try:
                await there.execute(f"CREATE TABLE public.other (id int) ; "
                                    f"ALTER TABLE public.other OWNER TO {name}_other")
            finally:
                await there.close()
            other = await asyncpg.connect(dsn.replace(f"{name}:pw@", f"{name}_other:pw@"))
            try:
                await other.execute("ALTER TABLE public.other ADD COLUMN note text")
                await other.execute("ALTER TABLE public.other RENAME COLUMN id TO key")
            finally:
                await other.close()
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {name}_other")
        await admin.execute(f"DROP ROLE {name}")
        await admin.close()


async def test_host_processes_starting_together_create_the_event_trigger_once(
    thorbis_pg_dsn: str
) -> None:
    """Several host processes run db init's steps at once when they start together: the
    event trigger is created by one of them, and none fails on the others'."""
    await migrate(thorbis_pg_dsn)  # the check function the event trigger runs
    conns = [await connect(thorbis_pg_dsn) for _ in range(4)]
    try:
        assert await asyncio.gather(*(ensure_ddl_guard(c) for c in conns)) == [None] * 4
        assert await conns[0].fetchval(
            "SELECT count(*) FROM pg_event_trigger WHERE evtname = $1", EVENT_TRIGGER) == 1
    finally:
        for conn in conns:
            await conn.close()
