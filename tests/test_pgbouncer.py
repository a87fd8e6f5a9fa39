"""thorbis-cache behind PgBouncer (a real one, in front of the session's PostgreSQL), as a
production host runs it.

Found as a user would: with the DSN pointing at PgBouncer, nothing could connect --
``db init``, the worker, ``health``, ``CacheApp.start`` -- in any pool mode: the
connections asked for ``plan_cache_mode`` as a startup parameter and PgBouncer refuses
unknown ones. Now a session-pooled DSN works as it is, and a transaction-pooled one with
``pgbouncer=true``: no statement cache, no session ``SET``, no LISTEN; logical capture,
which needs a replication connection, is refused by name.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest
from core_testing import CUSTOMER_SQL, run_cli, stale_customer
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.errors import ConfigurationError
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres.connection import connect, target_of
from thorbis_cache.testing.binaries import PgBouncerBinaries
from thorbis_cache.testing.servers import PgBouncer


def _bouncer(binaries: PgBouncerBinaries, dsn: str, mode: str) -> Iterator[str]:
    backend = urllib.parse.urlsplit(dsn)
    assert backend.port is not None
    bouncer = PgBouncer(backend_port=backend.port, pool_mode=mode, binaries=binaries)
    bouncer.start()
    try:
        pooled = bouncer.dsn(backend.path.lstrip("/"))
        yield pooled + ("?pgbouncer=true" if mode == "transaction" else "")
    finally:
        bouncer.stop()


@pytest.fixture(params=["session", "transaction"])
def pooled_dsn(request: pytest.FixtureRequest, pgbouncer_binaries: PgBouncerBinaries,
               thorbis_pg_dsn: str) -> Iterator[str]:
    """The test database through PgBouncer in each pool mode (transaction: with
    ``pgbouncer=true``)."""
    yield from _bouncer(pgbouncer_binaries, thorbis_pg_dsn, request.param)


async def test_everything_works_through_pgbouncer(
    pooled_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    dsn, url = pooled_dsn, thorbis_standalone_redis_url
    pooled = target_of(dsn).pooled
    out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin",
                                  "home_services")
    # auto: logical capture would need a replication connection, which PgBouncer does
    # not carry (a transaction pooler is said so by its DSN; a session pooler refuses).
    if pooled:
        assert "capture: triggers (the DSN goes through a transaction pooler" in out, out
    else:
        assert "capture: triggers (a replication connection was refused" in out, out
        assert "unsupported startup parameter: replication" in out
    assert "capture trigger on hs.customers" in out
    app = await CacheApp(url, keyring=KeyRing.generate(), postgres_dsn=dsn).start(
        ["home_services"])
    conn = await connect(dsn)
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 20)
        key = CUSTOMER.key("acme", customer_id=7)
        async with OutboxWorker.from_app(app, dsn) as worker:
            await worker.drain()
            # Many batches, so that a transaction pooler hands them to several server
            # connections: no statement may depend on the one before.
            for round_ in range(12):
                stale = stale_customer(7)
                await app.cache.hash(key).replace(stale)
                await conn.execute("UPDATE hs.customers SET phone = $1 WHERE id = 7",
                                   f"p{round_}")
                results = await worker.drain()
                assert "{acme}:hs.customer:7" in {k for r in results for k in r.keys}
                assert await app.cache.hash(key).get() is None
        # The CLI worker and health, as an operator runs them.
        await conn.execute("UPDATE hs.customers SET phone = 'cli' WHERE id = 7")
        done = await asyncio.to_thread(
            run_cli, "worker", "--dsn", dsn, "--redis-url", url, "--plugin",
            "home_services", "--once", "--no-queue", "--no-mv")
        assert re.search(r"\d+ change\(s\) applied", done), done
        report = await asyncio.to_thread(run_cli, "health", "--dsn", dsn, "--redis-url",
                                         url, "--plugin", "home_services",
                                         code=1)  # views never refreshed: warning
        assert re.search(r"healthy +postgres", report), report
        assert re.search(r"healthy +capture", report), report
        assert re.search(r"healthy +outbox", report), report
    finally:
        await conn.close()
        await app.aclose()


async def test_logical_capture_through_a_transaction_pooler_is_refused(
    pgbouncer_binaries: PgBouncerBinaries, thorbis_pg_dsn: str,
    thorbis_standalone_redis_url: str,
) -> None:
    for dsn in _bouncer(pgbouncer_binaries, thorbis_pg_dsn, "transaction"):
        refused = await asyncio.to_thread(
            run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
            "--capture", "logical", code=1)
        assert "goes through a transaction pooler (pgbouncer=true)" in refused
        assert "server's own address" in refused
        worker = await asyncio.to_thread(
            run_cli, "worker", "--dsn", dsn, "--redis-url", thorbis_standalone_redis_url,
            "--plugin", "home_services", "--once", "--capture", "logical", code=64)
        assert "transaction pooler" in " ".join(re.sub("[│╭╮╰╯─]", " ", worker).split())


def test_the_pooler_parameter_is_read_and_taken_out() -> None:
    assert target_of("postgresql://u@h:6432/db?pgbouncer=true&sslmode=disable") == (
        target_of("postgresql://u@h:6432/db?sslmode=disable&pgbouncer=1").__class__(
            "postgresql://u@h:6432/db?sslmode=disable", True))
    assert not target_of("postgresql://u@h/db?pgbouncer=false").pooled
    assert target_of("postgresql://u@h/db?pgbouncer=false").dsn == "postgresql://u@h/db"
    assert target_of("host=h dbname=db") == target_of("host=h dbname=db").__class__(
        "host=h dbname=db", False)
    with pytest.raises(ConfigurationError, match="pgbouncer='maybe'"):
        target_of("postgresql://u@h/db?pgbouncer=maybe")


async def test_a_host_behind_a_pooler_keeps_the_logical_capture_a_release_job_set_up(
    pgbouncer_binaries: PgBouncerBinaries, thorbis_pg_dsn: str,
    thorbis_standalone_redis_url: str,
) -> None:
    """Found as a user would, deploying as the docs say ("give the worker and `db init
    --capture logical` the server's own address and pool everything else"): the release
    job set up logical capture, then the application, whose DSN goes through the
    transaction pooler, started with ``apply_sql=True`` (auto capture), found no
    replication connection there and installed the capture triggers on top of the slot.
    Every write of the host then paid for both captures, and the worker applied each
    change twice. ``auto`` now keeps the capture a slot says the database has."""
    name = f"p{uuid.uuid4().hex[:10]}"
    url = thorbis_standalone_redis_url
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin",
                            "home_services", "--capture", "logical", "--slot", name)
    direct = await connect(thorbis_pg_dsn)
    app = None
    try:
        for dsn in _bouncer(pgbouncer_binaries, thorbis_pg_dsn, "transaction"):
            app = await CacheApp(url, keyring=KeyRing.generate(), postgres_dsn=dsn).start(
                ["home_services"], apply_sql=True, slot=name)
            assert app.database is not None
            assert (app.database.capture, app.database.slot) == ("logical", f"thorbis_{name}")
            out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin",
                                          "home_services", "--slot", name)
            assert f"logical capture thorbis_{name} ready" in out, out
            assert "capture trigger" not in out
            assert await direct.fetchval(_CAPTURE_TRIGGERS) == 0
            # The worker reads the slot on the server's own address; a write through the
            # pooler is invalidated once, from the WAL, and the outbox stays empty.
            pooled = await connect(dsn)
            try:
                await pooled.execute(CUSTOMER_SQL, "acme", 2)
                async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
                    await worker.drain()
                    key = CUSTOMER.key("acme", customer_id=2)
                    await app.cache.hash(key).replace(stale_customer(2))
                    await pooled.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 2")
                    results = await worker.drain()
                    assert [k for r in results for k in r.keys] == ["{acme}:hs.customer:2"]
                    assert await app.cache.hash(key).get() is None
                assert await direct.fetchval("SELECT count(*) FROM thorbis.outbox") == 0
            finally:
                await pooled.close()
    finally:
        if app is not None:
            await app.aclose()
        await direct.execute("SELECT pg_drop_replication_slot($1)", f"thorbis_{name}")
        await direct.close()


_CAPTURE_TRIGGERS = """
SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
 JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'thorbis' AND NOT t.tgisinternal AND t.tgrelid::regclass::text LIKE 'hs.%'
"""
