"""``db init`` never queues the host's writes behind its own DDL.

Found as a user would: a release job ran ``db init`` (as every deploy does; an app
starting with ``apply_sql=True`` runs the same) while a batch job of the host held a
transaction open on ``hs.customers``. Installing the capture triggers asks for a lock
that conflicts with the batch job's, so ``db init`` waited for it; and PostgreSQL queues
every later lock request behind a waiting one, so every INSERT, UPDATE and DELETE of
the host on that table (and on every table installed before it in the same transaction)
waited too, for as long as the batch job ran. Logical capture's first setup
(``REPLICA IDENTITY FULL``) took the same kind of lock, one that even queues reads.

Now each capture DDL transaction waits for a table lock ``LOCK_TIMEOUT`` at most, then
rolls back (the host's queued statements go on), says who holds the table, and tries
again after a pause, until ``LOCK_ATTEMPTS`` are spent: then it fails naming the table and
the sessions that hold it. A server-wide ``statement_timeout`` (set on the database or
the role) no longer cuts short the slot's creation, which waits for the transactions
running when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from capture_env import Env, capture_env
from core_testing import CUSTOMER_SQL, run_cli, wait_until

from thorbis_cache.postgres import ddl_locks, logical


@contextlib.asynccontextmanager
async def _env(mode: str, dsn: str, redis_url: str) -> AsyncIterator[Env]:
    async with capture_env(mode, dsn, redis_url) as env:
        await env.conn.execute(CUSTOMER_SQL, "acme", 3)
        yield env


@pytest.fixture(params=["triggers", "logical"])
async def env(request: pytest.FixtureRequest, thorbis_pg_dsn: str,
              thorbis_standalone_redis_url: str) -> AsyncIterator[Env]:
    async with _env(request.param, thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        yield env


@pytest.fixture
async def triggers_env(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
                       ) -> AsyncIterator[Env]:
    """Trigger capture only: a re-run of logical capture takes no lock a writer holds."""
    async with _env("triggers", thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        yield env


@pytest.fixture
async def logical_env(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
                      ) -> AsyncIterator[Env]:
    """Logical capture only: a slot to create."""
    async with _env("logical", thorbis_pg_dsn, thorbis_standalone_redis_url) as env:
        yield env


@contextlib.asynccontextmanager
async def _batch_job(env: Env) -> AsyncIterator[asyncpg.Connection]:
    """A host's transaction holding a write lock on hs.customers until the block ends."""
    job = await asyncpg.connect(env.dsn)
    try:
        async with job.transaction():
            await job.execute("UPDATE hs.customers SET phone = 'job' WHERE id = 1")
            yield job
    finally:
        await job.close()


def _db_init(env: Env, *extra: str, code: int = 0) -> str:
    args = ["db", "init", "--dsn", env.dsn, "--plugin", "home_services", *extra]
    if env.capture is not None:
        args += ["--slot", env.capture.slot.removeprefix("thorbis_")]
    return run_cli(*args, code=code)


async def test_db_init_never_queues_the_hosts_writes_behind_it(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="thorbis_cache")
    monkeypatch.setattr(ddl_locks, "LOCK_TIMEOUT", 0.2)
    monkeypatch.setattr(ddl_locks, "RETRY_PAUSE", 0.3)
    if env.mode == "logical":
        # What logical capture's first setup changes under a table lock: the identity.
        await env.conn.execute("ALTER TABLE hs.customers REPLICA IDENTITY DEFAULT")
        mode = ("--capture", "logical")
    else:
        # What a release's setup changes under a table lock: a capture trigger (a
        # setup with nothing to change takes no such lock: test_capture_rerun).
        await env.conn.execute("DROP TRIGGER thorbis_capture_update ON hs.customers")
        mode = ("--capture", "triggers")
    writer = await asyncpg.connect(env.dsn)
    try:
        async with _batch_job(env):
            release = asyncio.ensure_future(asyncio.to_thread(_db_init, env, *mode))

            async def db_init_waits() -> bool:
                return bool(await env.conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query NOT LIKE '%pg_stat_activity%'"))

            await wait_until("db init waits for the batch job's table", db_init_waits)
            # The host writes another row of the same table meanwhile: it is never
            # held behind db init for longer than one attempt's lock timeout.
            for cid in (2, 3, 2, 3):
                await asyncio.wait_for(writer.execute(
                    "UPDATE hs.customers SET phone = phone || '1' WHERE id = $1", cid), 30)
            assert not release.done()  # still trying, the batch job still runs
        await asyncio.wait_for(release, 60)
    finally:
        await writer.close()
    assert "waiting for a lock on hs.customers" in caplog.text, caplog.text
    # Installed in the end, as if nothing had been in the way.
    if env.mode == "logical":
        assert await env.conn.fetchval(
            "SELECT relreplident::text FROM pg_class WHERE oid = 'hs.customers'::regclass"
        ) == "f"
    async with env.worker() as worker:
        await env.drained(worker, 2)


async def test_db_init_names_who_holds_the_table_when_it_gives_up(
    triggers_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = triggers_env
    monkeypatch.setattr(ddl_locks, "LOCK_TIMEOUT", 0.1)
    monkeypatch.setattr(ddl_locks, "RETRY_PAUSE", 0.05)
    monkeypatch.setattr(ddl_locks, "LOCK_ATTEMPTS", 3)
    await env.conn.execute("DROP TRIGGER thorbis_capture_update ON hs.customers")
    async with _batch_job(env) as job:
        await job.execute("LOCK TABLE hs.invoices IN ROW EXCLUSIVE MODE")
        pid = await job.fetchval("SELECT pg_backend_pid()")
        out = await asyncio.to_thread(_db_init, env, "--capture", "triggers", code=1)
    text = " ".join(out.split())
    # Each lock the session holds on the tables, not one of them.
    assert "RowExclusiveLock on hs.customers, RowExclusiveLock on hs.invoices" in text, text
    assert f"PID {pid}" in text, text
    assert "3 attempt" in text, text
    assert "Traceback" not in out


async def test_a_statement_timeout_on_the_database_does_not_cut_the_slots_creation_short(
    logical_env: Env
) -> None:
    """A DBA's ``ALTER DATABASE ... SET statement_timeout``: creating the slot waits for
    a transaction that was running (here: 1 s longer than the timeout)."""
    env = logical_env
    assert env.capture is not None
    database = env.dsn.rsplit("/", 1)[1]
    await env.conn.execute(f"ALTER DATABASE {database} SET statement_timeout = '500ms'")
    try:
        await env.capture.drop(env.conn)
        job = await asyncpg.connect(env.dsn)
        try:
            await job.execute("BEGIN; SELECT txid_current()")
            release = asyncio.ensure_future(asyncio.to_thread(
                _db_init, env, "--capture", "logical"))
            await asyncio.sleep(1.5)  # past the statement timeout, not an assertion on time
            assert not release.done()
            await job.execute("COMMIT")
            out = await asyncio.wait_for(release, 60)
        finally:
            await job.close()
        assert "ready" in out, out
        assert await env.conn.fetchval("SELECT count(*) FROM pg_replication_slots "
                                       "WHERE slot_name = $1", env.capture.slot) == 1
    finally:
        await env.conn.execute(f"ALTER DATABASE {database} RESET statement_timeout")


async def test_a_slot_that_waits_too_long_names_the_transactions_it_waits_for(
    logical_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = logical_env
    assert env.capture is not None
    monkeypatch.setattr(logical, "SLOT_CREATE_TIMEOUT", 0.5)
    await env.capture.drop(env.conn)
    job = await asyncpg.connect(env.dsn, server_settings={"application_name": "nightly"})
    try:
        await job.execute("BEGIN; SELECT txid_current()")
        pid = await job.fetchval("SELECT pg_backend_pid()")
        out = await asyncio.to_thread(_db_init, env, "--capture", "logical", code=1)
    finally:
        await job.close()
    text = " ".join(out.split())
    assert "the slot was not created within 0.5 s" in text, text
    assert f"PID {pid} (nightly, idle in transaction" in text, text
    assert "Traceback" not in out
