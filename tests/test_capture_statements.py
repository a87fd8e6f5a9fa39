"""The statements a host's code writes with, against change capture, under both
captures: upserts (``INSERT ... ON CONFLICT``), ``MERGE``, a data-modifying CTE, a
cascading foreign key, ``COPY``, and changes rolled back to a savepoint. Each change
must invalidate exactly what a plain INSERT, UPDATE or DELETE of the same rows would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import attrs
import pytest
from core_testing import (
    CUSTOMER_SQL,
    NOW,
    TECH_SQL,
    WORK_ORDER_SQL,
    db_init,
    run_cli,
    stale_customer,
    wait_until,
)
from thorbis_home_services.schemas import CUSTOMER, CUSTOMER_HISTORY, TAG_CUSTOMER_LISTS

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres.logical import LogicalCapture


@attrs.frozen
class Env:
    conn: asyncpg.Connection
    app: CacheApp
    worker: OutboxWorker
    mode: str
    dsn: str
    redis_url: str
    capture: LogicalCapture | None

    async def cache(self, *ids: int) -> None:
        for cid in ids:
            await self.app.cache.hash(CUSTOMER.key("acme", customer_id=cid)).replace(
                stale_customer(cid))

    async def cached(self, *ids: int) -> set[int]:
        return {cid for cid in ids
                if await self.app.cache.hash(CUSTOMER.key("acme", customer_id=cid)).get()
                is not None}

    async def applied(self) -> None:
        await self.worker.drain()


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    mode: str = request.param
    app = await CacheApp(thorbis_standalone_redis_url,
                         keyring=KeyRing.generate()).start(["home_services"])
    capture = await db_init(app, thorbis_pg_dsn, mode)
    conn = await asyncpg.connect(thorbis_pg_dsn, server_settings={"synchronous_commit": "on"})
    worker = OutboxWorker.from_app(app, thorbis_pg_dsn, capture=capture)
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 6)
        await worker.drain()
        yield Env(conn, app, worker, mode, thorbis_pg_dsn, thorbis_standalone_redis_url,
                  capture)
    finally:
        await worker.aclose()
        if capture is not None:
            await capture.drop(conn)
        await conn.close()
        await app.aclose()


_UPSERT = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
VALUES ('acme', $1, 'Ada', 'Lovelace', 'ada@example.com', $2, 'residential', 'active',
        'current', -97.7, 30.2)
ON CONFLICT (tenant_id, id) DO {}
"""


async def test_an_upsert_invalidates_the_row_it_updated(env: Env) -> None:
    await env.cache(1, 2, 7)
    await env.conn.execute(_UPSERT.format("UPDATE SET phone = EXCLUDED.phone"), 1, "upserted")
    await env.conn.execute(_UPSERT.format("UPDATE SET phone = EXCLUDED.phone"), 7, "new")
    await env.conn.execute(_UPSERT.format("NOTHING"), 2, "ignored")
    await env.applied()
    assert await env.cached(1, 2, 7) == {2}


async def test_merge_invalidates_what_each_action_changed(env: Env) -> None:
    await env.cache(1, 2, 3, 8)
    await env.conn.execute("""
        MERGE INTO hs.customers c
        USING (VALUES (1, 'merged', false), (2, '', true), (8, 'inserted', false))
              AS v(id, phone, gone)
           ON c.tenant_id = 'acme' AND c.id = v.id
        WHEN MATCHED AND v.gone THEN DELETE
        WHEN MATCHED THEN UPDATE SET phone = v.phone
        WHEN NOT MATCHED THEN
          INSERT (tenant_id, id, first_name, last_name, email, phone, customer_type,
                  account_status, payment_status, longitude, latitude)
          VALUES ('acme', v.id, 'Ada', 'Lovelace', 'a@example.com', v.phone, 'residential',
                  'active', 'current', -97.7, 30.2)
    """)
    await env.applied()
    assert await env.cached(1, 2, 3, 8) == {3}


async def test_a_data_modifying_cte_and_a_savepoint(env: Env) -> None:
    await env.cache(1, 2, 3, 4)
    async with env.conn.transaction():
        await env.conn.execute("""
            WITH moved AS (UPDATE hs.customers SET phone = 'cte' WHERE tenant_id = 'acme'
                           AND id = 1 RETURNING id)
            DELETE FROM hs.customers WHERE tenant_id = 'acme'
               AND id = (SELECT id + 1 FROM moved)
        """)
        try:
            async with env.conn.transaction():  # a savepoint, rolled back
                await env.conn.execute(
                    "UPDATE hs.customers SET phone = 'rolled back' WHERE id = 3")
                raise RuntimeError
        except RuntimeError:
            pass
    await env.applied()
    assert await env.cached(1, 2, 3, 4) == {3, 4}


async def test_copy_into_a_watched_table(env: Env) -> None:
    await env.cache(9, 10, 1)
    await env.conn.copy_records_to_table(
        "customers", schema_name="hs",
        columns=["tenant_id", "id", "first_name", "last_name", "email", "phone",
                 "customer_type", "account_status", "payment_status", "longitude",
                 "latitude"],
        records=[("acme", i, "A", "B", "c@example.com", "1", "residential", "active",
                  "current", 1.0, 2.0) for i in (9, 10)])
    await env.applied()
    assert await env.cached(9, 10, 1) == {1}


async def test_a_session_in_replica_mode_is_still_captured(env: Env) -> None:
    """Found as a user would: a bulk fix run with ``SET session_replication_role =
    replica`` (the usual way to skip foreign-key checks and the host's own triggers;
    ``pg_restore --disable-triggers`` and many ETL tools do it) was not captured under
    capture triggers: ordinary triggers do not fire in a replica session, so the cache
    kept the old rows. The capture triggers are ``ENABLE ALWAYS`` now."""
    await env.cache(1, 2, 3)
    async with env.conn.transaction():
        await env.conn.execute("SET LOCAL session_replication_role = replica")
        await env.conn.execute("UPDATE hs.customers SET phone = 'bulk fix' WHERE id IN (1, 2)")
    await env.applied()
    assert await env.cached(1, 2, 3) == {3}
    # A migration in such a session is still checked by the DDL guard (ALWAYS too).
    async with env.conn.transaction():
        await env.conn.execute("SET LOCAL session_replication_role = replica")
        await env.conn.execute("ALTER TABLE hs.customers RENAME COLUMN account_status TO st")
        await env.conn.execute("UPDATE hs.customers SET phone = 'after' WHERE id = 3")
    await env.applied()
    assert await env.cached(3) == set()


async def test_a_table_no_longer_captured_is_said(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A capture trigger disabled (``ALTER TABLE ... DISABLE TRIGGER ALL``, which bulk
    loaders run), or a table taken out of the publication, left its entries stale with
    nothing said: a worker already running (checked once, at start) went on applying
    nothing for it. ``thorbis-cache health`` now checks that every rule's table is
    captured, and a running worker checks it again every ``capture_check_interval``."""
    def health(code: int) -> dict[str, Any]:
        out = run_cli("health", "--redis-url", env.redis_url, "--dsn", env.dsn,
                      "--plugin", "home_services", "--json", code=code)
        return dict(json.loads(out)["checks"]["capture"])

    assert (await asyncio.to_thread(health, 1))["status"] == "healthy"
    worker = env.worker  # (under logical capture, the slot's one reader)
    worker.capture_check_interval = 0.05
    running = asyncio.create_task(worker.run())
    try:
        await worker.drained()
        assert worker.metrics.uncaptured_tables == 0
        if env.capture is None:
            await env.conn.execute("ALTER TABLE hs.customers DISABLE TRIGGER ALL")
        else:
            await env.conn.execute(f"ALTER PUBLICATION {env.capture.publication} "
                                   "DROP TABLE hs.customers")
        check = await asyncio.to_thread(health, 2)
        assert check["status"] == "unhealthy"
        assert check["reason"].startswith("hs.customers (rules hs.customer_entity")
        assert check["uncaptured"] == 1

        async def noticed() -> bool:
            return worker.metrics.uncaptured_tables == 1

        await wait_until("the running worker noticed", noticed)
        assert "change capture stopped for 1 table(s)" in caplog.text
    finally:
        worker.stop()
        await running


async def test_an_application_role_without_rights_on_thorbis_still_writes(env: Env) -> None:
    """Found as a user would: the host's application connects as a least-privilege role
    that may write its own tables but has no rights on the ``thorbis`` schema (``db init``
    ran as the owner, as migrations do). Under capture triggers every write of a watched
    table failed with ``permission denied for schema thorbis``: the triggers' functions
    ran as the writer. They run as their owner now (``SECURITY DEFINER``, a fixed
    ``search_path``), the stand-in and the TRUNCATE capture too."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    await env.conn.execute(f"CREATE ROLE {role} LOGIN")
    await env.conn.execute(f"GRANT USAGE ON SCHEMA hs TO {role}")
    await env.conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES "
                           f"IN SCHEMA hs TO {role}")
    app_conn = await asyncpg.connect(env.dsn.replace("postgres@", f"{role}@"))
    try:
        await env.cache(1, 2, 3)
        await app_conn.execute("UPDATE hs.customers SET phone = 'app' WHERE id = 1")
        await app_conn.execute("DELETE FROM hs.customers WHERE id = 2")
        await env.applied()
        assert await env.cached(1, 2, 3) == {3}
        # A migration renamed a watched column: the stand-in captures, as the owner too.
        await env.conn.execute("ALTER TABLE hs.customers RENAME COLUMN account_status TO st")
        await app_conn.execute("UPDATE hs.customers SET phone = 'app 2' WHERE id = 3")
        await env.applied()
        assert await env.cached(3) == set()
        await env.cache(4)
        await app_conn.execute("TRUNCATE hs.customers CASCADE")
        await env.applied()
        assert await env.cached(4) == set()
    finally:
        await app_conn.close()


async def test_a_row_moved_to_another_tenant_invalidates_both_tenants(env: Env) -> None:
    """A watched table whose primary key does not hold the tenant (``PRIMARY KEY
    (id)``): an UPDATE that moves a row to another tenant (a customer handed to another
    franchise) must make both tenants' entries stale, the old tenant's most of all."""
    await env.conn.execute("ALTER TABLE hs.customers DROP CONSTRAINT customers_pkey CASCADE")
    await env.conn.execute("ALTER TABLE hs.customers ADD PRIMARY KEY (id)")
    args = ["db", "init", "--dsn", env.dsn, "--plugin", "home_services", "--capture", env.mode]
    if env.capture is not None:
        args += ["--slot", env.capture.slot.removeprefix("thorbis_")]
    await asyncio.to_thread(run_cli, *args)
    await env.worker.drain()
    await env.cache(1, 2)
    globex = CUSTOMER.key("globex", customer_id=1)
    await env.app.cache.hash(globex).replace(stale_customer(1))  # stands for an absence
    await env.conn.execute("UPDATE hs.customers SET tenant_id = 'globex' WHERE id = 1")
    results = await env.worker.drain()
    assert {k for r in results for k in r.keys} >= {"{acme}:hs.customer:1",
                                                  "{globex}:hs.customer:1"}
    tags = {t for r in results for t in r.tags}
    assert {("acme", TAG_CUSTOMER_LISTS), ("globex", TAG_CUSTOMER_LISTS)} <= tags
    assert await env.cached(1, 2) == {2}
    assert await env.app.cache.hash(globex).get() is None


async def test_a_row_moved_to_another_key_invalidates_both_keys(env: Env) -> None:
    """A work order handed to another customer changes no significant column of the
    history rule (status, completed_at), only the column its key is built from: both
    customers' histories are stale, the old one's holding an order it no longer has.
    Found as a plugin author would (and true of home_services' own rule): the UPDATE
    was not captured, or not planned, and both histories stayed as they were."""
    await env.conn.execute(TECH_SQL, "acme", 1)
    await env.conn.execute(WORK_ORDER_SQL, "acme", 1, 1, 1, NOW)
    await env.worker.drain()
    histories = [CUSTOMER_HISTORY.key("acme", customer_id=cid) for cid in (1, 2, 3)]
    for key in histories:
        await env.app.cache.zset(key).add({7: 1.0}, replace=True)
    # An unwatched column alone is still skipped: nothing of the key or the rule moved.
    await env.conn.execute("UPDATE hs.work_orders SET priority = 'low' WHERE id = 1")
    await env.worker.drain()
    assert [await env.app.cache.zset(k).card() for k in histories] == [1, 1, 1]
    await env.conn.execute("UPDATE hs.work_orders SET customer_id = 2 WHERE id = 1")
    results = await env.worker.drain()
    keys = {k for r in results for k in r.keys}
    assert {"{acme}:hs.customer_history:1", "{acme}:hs.customer_history:2"} <= keys
    assert [await env.app.cache.zset(k).card() for k in histories] == [0, 0, 1]
