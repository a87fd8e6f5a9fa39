"""The host's PostgreSQL fails over (a streaming standby promoted), under both captures.

Found as a user would, with a primary and a real streaming standby: the usual HA setup
(Patroni, a managed service's failover) replicates asynchronously, so commits the old
primary made in its last moments may never reach the standby. A reader that filled the
cache from such a commit left an entry for a row state that no longer exists after the
promotion, and nothing ever invalidated it: under capture triggers the worker went on
with the new primary's outbox as if nothing had happened. The worker now notices that
the database it reads is on another timeline (or another system) than the one it last
saw, and flushes what it can no longer prove fresh, as it does for a lost slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator

import asyncpg
import attrs
import pytest
from core_testing import CUSTOMER_SQL, db_init, run_cli, stale_customer, wait_until
from thorbis_home_services import loaders
from thorbis_home_services.models import Customer
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.cache.tags import CacheTagInvalidator
from thorbis_cache.errors import ConfigurationError
from thorbis_cache.invalidation.batch import BatchResult
from thorbis_cache.invalidation.database_origin import origin_of
from thorbis_cache.invalidation.replica_echo import ReplicaEcho
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.mv.scheduler import MvScheduler
from thorbis_cache.postgres import connection, replication
from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers.postgres_server import PostgresServer


@attrs.frozen
class Pair:
    primary: PostgresServer
    standby: PostgresServer

    @property
    def dsn(self) -> str:
        """libpq's multi-host DSN: whichever of the two accepts writes."""
        return (f"postgresql://postgres@{HOST}:{self.primary.port},{HOST}:"
                f"{self.standby.port}/postgres?target_session_attrs=read-write")


@contextlib.contextmanager
def _primary_and_standby(primary_settings: dict[str, str] | None = None,
                         **standby_settings: str) -> Iterator[Pair]:
    primary = PostgresServer(settings=primary_settings).start()
    standby = None
    try:
        standby = PostgresServer(standby_of=primary, settings=standby_settings).start()
        yield Pair(primary, standby)
    finally:
        for server in (standby, primary):
            if server is not None:
                server.stop()


@pytest.fixture
def pair() -> Iterator[Pair]:
    with _primary_and_standby() as servers:
        yield servers


async def _replayed(pair: Pair, conn: asyncpg.Connection) -> None:
    """Wait until the standby has replayed everything the primary has written."""
    lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
    standby = await asyncpg.connect(pair.standby.dsn())
    try:
        await wait_until("the standby replayed the primary's WAL", lambda: standby.fetchval(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn))
    finally:
        await standby.close()


@pytest.fixture(params=["triggers", "logical"])
async def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def app(thorbis_standalone_redis_url: str) -> AsyncIterator[CacheApp]:
    app = await CacheApp(thorbis_standalone_redis_url,
                         keyring=KeyRing.generate()).start(["home_services"])
    try:
        yield app
    finally:
        await app.aclose()


async def test_a_failover_that_lost_commits_leaves_nothing_stale(
    pair: Pair, mode: str, app: CacheApp, caplog: pytest.LogCaptureFixture
) -> None:
    capture = await db_init(app, pair.primary.dsn(), mode)
    conn = await asyncpg.connect(pair.primary.dsn())
    await conn.execute(CUSTOMER_SQL, "acme", 2)
    await _replayed(pair, conn)
    cache = app.cache
    lost_key = CUSTOMER.key("acme", customer_id=1)
    other_key = CUSTOMER.key("acme", customer_id=2)
    worker = OutboxWorker.from_app(app, pair.dsn, capture=capture, max_backoff=0.2)
    running = asyncio.create_task(worker.run())
    try:
        await worker.drained()
        await _replayed(pair, conn)  # the standby has all of it, the outbox drained too
        # The standby stops receiving: what the primary commits now is never replicated.
        pair.standby.kill()
        await conn.execute("UPDATE hs.customers SET phone = 'lost' WHERE tenant_id = 'acme' "
                           "AND id = 1")
        await worker.drained()
        # A reader fills the entry from that commit, as the primary served it.
        await cache.hash(lost_key).replace(attrs.evolve(stale_customer(1), phone="lost"))
        await conn.close()
        pair.primary.kill()
        pair.standby.start()
        pair.standby.promote()

        # The worker follows the DSN to the new primary and invalidates its changes...
        new = await asyncpg.connect(pair.standby.dsn())
        await cache.hash(other_key).replace(stale_customer(2))
        await new.execute("UPDATE hs.customers SET phone = 'after' WHERE tenant_id = 'acme' "
                          "AND id = 2")

        async with asyncio.timeout(60):
            await worker.drained()
        assert await cache.hash(other_key).get() is None
        phone = await new.fetchval("SELECT phone FROM hs.customers WHERE tenant_id = 'acme' "
                                   "AND id = 1")
        await new.close()
        assert phone == "555-0100"  # the 'lost' commit is gone with the old primary
        # ... and the entry filled from the lost commit is not served any more.
        assert await cache.hash(lost_key).get() is None
        assert worker.metrics.capture_losses >= 1
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        if mode == "triggers":  # (logical capture: the slot is gone, and says so)
            assert any("it is on timeline 2, the cache reflects timeline 1" in m
                       for m in said)
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
        if capture is not None:
            with contextlib.suppress(Exception):
                new = await asyncpg.connect(pair.standby.dsn())
                await capture.drop(new)
                await new.close()


async def test_the_timeline_is_recorded_once_and_a_restart_flushes_nothing(
    thorbis_pg_dsn: str, app: CacheApp
) -> None:
    """A worker that starts (again) on the timeline the cache reflects flushes nothing;
    one that finds another timeline, or anything but a timeline under the key (a value
    written by hand), flushes."""
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin",
                            "home_services", "--capture", "triggers")
    cache = app.cache
    key = CUSTOMER.key("acme", customer_id=1)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        origin = await origin_of(conn)
    finally:
        await conn.close()
    assert origin is not None
    assert origin.timeline == 1
    prefix = cache.settings.prefix
    record, legacy = origin.key(prefix), origin.legacy_key(prefix)
    here = origin.record().encode()
    await cache.store.command("UNLINK", record)
    system, oid = origin.system, origin.oid
    for where, recorded, flushed in [
            (record, None, False), (record, here, False), (record, here, False),
            (record, f"{system}/{oid}/7".encode(), True),
            (record, f"{system}/{oid + 1}/1".encode(), True),
            (record, f"1{system}/{oid}/1".encode(), True), (record, b"garbage", True),
            # What earlier builds kept: the timeline alone, under another key.
            (legacy, b"1", False), (legacy, b"7", True)]:
        if recorded is not None:
            if where == legacy:
                await cache.store.command("UNLINK", record)
            await cache.store.command("SET", where, recorded)
        await cache.hash(key).replace(stale_customer(1))
        async with OutboxWorker.from_app(app, thorbis_pg_dsn, capture=None) as worker:
            await worker.drained()
        assert (await cache.hash(key).get() is None) is flushed, recorded
        assert worker.metrics.capture_losses == int(flushed)
        assert await cache.store.command("GET", record) == here
        assert await cache.store.command("EXISTS", legacy) == 0


async def test_a_primary_that_stops_answering_is_left_for_the_promoted_standby(
    mode: str, app: CacheApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found as a user would: a primary that hangs (a stalled disk, a frozen VM, a
    network partition without a reset) keeps its connections open and silent. After
    its standby was promoted, the worker still waited on its query to the old primary,
    without a word: nothing was invalidated for as long as it was tried (150 s), under
    both captures. Now the worker's queries have a deadline, a replication stream that
    hears nothing is dropped, and each host of a multi-host DSN gets its own connect
    timeout (asyncpg's is for all of them, spent on the first). The timeouts are
    shortened here to keep the test quick."""
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT", 2.0)
    monkeypatch.setattr(connection, "QUERY_TIMEOUT", 2.0)
    monkeypatch.setattr(replication, "STATUS_INTERVAL", 0.5)
    with _primary_and_standby({"wal_writer_delay": "10ms"}) as pair:
        capture = await db_init(app, pair.primary.dsn(), mode)
        conn = await asyncpg.connect(pair.primary.dsn())
        await conn.execute(CUSTOMER_SQL, "acme", 2)
        await _replayed(pair, conn)
        await conn.close()
        worker = OutboxWorker.from_app(app, pair.dsn, capture=capture, max_backoff=0.2)
        async with _running(worker):
            await worker.drained()
            async with _primary_hangs(pair) as new:
                key = CUSTOMER.key("acme", customer_id=2)
                await app.cache.hash(key).replace(stale_customer(2))
                await new.execute("UPDATE hs.customers SET phone = 'after' "
                                  "WHERE tenant_id = 'acme' AND id = 2")

                async def invalidated() -> bool:
                    return await app.cache.hash(key).get() is None

                await wait_until("the change on the new primary is invalidated",
                                 invalidated, within=60)
                if capture is not None:
                    await capture.drop(new)
        await worker.aclose()


@contextlib.asynccontextmanager
async def _primary_hangs(pair: Pair) -> AsyncIterator[asyncpg.Connection]:
    """Freeze the primary, promote the standby, and yield a connection to it; the old
    primary is thawed on the way out."""
    pair.primary.freeze()
    try:
        pair.standby.promote()
        new = await asyncpg.connect(pair.standby.dsn())
        try:
            yield new
        finally:
            await new.close()
    finally:
        pair.primary.thaw()


@contextlib.asynccontextmanager
async def _running(process: OutboxWorker | MvScheduler) -> AsyncIterator[None]:
    """``process.run()`` in a task, stopped (and awaited) on the way out."""
    running = asyncio.create_task(process.run())
    try:
        yield
    finally:
        process.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 20)


async def test_the_view_scheduler_moves_on_from_a_primary_that_stops_answering(
    app: CacheApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's view scheduler had the same wait: its next statement to a primary
    that hung never returned, and no view was refreshed again until the worker
    restarted. Its statements have the same deadline (a refresh its own: the view's
    statement_timeout and a margin)."""
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT", 2.0)
    monkeypatch.setattr(connection, "QUERY_TIMEOUT", 2.0)
    overdue = "UPDATE thorbis.mv_state SET cron_fired_at = now() - interval '2 years'"
    refreshed = ("SELECT count(*) FROM thorbis.mv_refresh_history WHERE outcome = 'ok' "
                 "AND started_at > $1")
    with _primary_and_standby() as pair:
        await db_init(app, pair.primary.dsn(), "triggers")
        scheduler = MvScheduler.from_app(app, pair.dsn, tick_s=0.2)
        await scheduler.tick()  # registers the views: their cron clocks start now
        old = await asyncpg.connect(pair.primary.dsn())
        try:
            await old.execute(overdue)
            await _replayed(pair, old)
        finally:
            await old.close()
        async with _running(scheduler), _primary_hangs(pair) as new:
            since = await new.fetchval("SELECT now()")
            await new.execute(overdue)

            async def refreshed_on_the_new_primary() -> bool:
                return bool(await new.fetchval(refreshed, since))

            await wait_until("a view is refreshed on the new primary",
                             refreshed_on_the_new_primary, within=60)
        await scheduler.aclose()


async def test_a_replication_stream_that_hears_nothing_is_dropped(
    thorbis_pg_dsn: str, app: CacheApp, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The stream's half of it: the server side of the worker's replication session
    stops answering (frozen here; a network partition does the same) while its
    ordinary connection still works. The worker used to wait on it without a word; it
    now takes the stream for lost once it heard nothing for SILENCE_INTERVALS status
    intervals (each asks for a keepalive), and reads the slot again as soon as the
    server lets it."""
    monkeypatch.setattr(replication, "STATUS_INTERVAL", 0.3)
    capture = await db_init(app, thorbis_pg_dsn, "logical")
    assert capture is not None
    conn = await asyncpg.connect(thorbis_pg_dsn)
    worker = OutboxWorker.from_app(app, thorbis_pg_dsn, capture=capture, max_backoff=0.2)
    running = asyncio.create_task(worker.run())
    sender = None
    try:
        await worker.drained()
        sender = await conn.fetchval("SELECT active_pid FROM pg_replication_slots "
                                     "WHERE slot_name = $1", capture.slot)
        assert sender is not None
        os.kill(sender, signal.SIGSTOP)

        async def dropped() -> bool:
            return "the server sent nothing for" in caplog.text

        await wait_until("the worker drops the silent stream", dropped)
        os.kill(sender, signal.SIGCONT)  # it finds its client gone, and frees the slot
        await conn.execute(CUSTOMER_SQL, "acme", 1)
        key = CUSTOMER.key("acme", customer_id=1)
        await app.cache.hash(key).replace(stale_customer(1))
        await conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 1")

        async def invalidated() -> bool:
            return await app.cache.hash(key).get() is None

        await wait_until("the worker reads the slot again", invalidated)
    finally:
        if sender is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sender, signal.SIGCONT)
        worker.stop()
        await running
        await worker.aclose()
        await capture.drop(conn)
        await conn.close()


async def _worker_drains(app: CacheApp, dsn: str) -> OutboxWorker:
    async with OutboxWorker.from_app(app, dsn, capture=None) as worker:
        await worker.drained()
    return worker


async def test_a_database_restored_from_a_backup_leaves_nothing_stale(
    thorbis_pg_dsn: str, app: CacheApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Found as a user would, restoring last night's logical backup the usual way (drop
    the database, create it again, restore into it): the rows went back in time on the
    same cluster, under the same name and timeline, so the worker noticed nothing, and
    an entry filled from a row the restore took back was served until its TTL. The
    database's oid is recorded with the timeline now: a database created again under
    its name flushes like a failover."""
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin",
                            "home_services", "--capture", "triggers")
    name = thorbis_pg_dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(thorbis_pg_dsn.rsplit("/", 1)[0] + "/postgres")
    conn = await asyncpg.connect(thorbis_pg_dsn)
    key = CUSTOMER.key("acme", customer_id=1)
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 2)
        await _worker_drains(app, thorbis_pg_dsn)
        await conn.close()
        # Last night's backup, as a template the restore copies.
        await admin.execute(f'CREATE DATABASE "{name}_backup" TEMPLATE "{name}"')
        conn = await asyncpg.connect(thorbis_pg_dsn)
        await conn.execute("UPDATE hs.customers SET phone = 'today' WHERE id = 1")
        assert (await _worker_drains(app, thorbis_pg_dsn)).metrics.capture_losses == 0
        await app.cache.hash(key).replace(attrs.evolve(stale_customer(1), phone="today"))
        await conn.close()
        # The restore: the database dropped, created again, filled from the backup.
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{name}_backup"')
        conn = await asyncpg.connect(thorbis_pg_dsn)
        assert await conn.fetchval("SELECT phone FROM hs.customers WHERE id = 1") != "today"
        worker = await _worker_drains(app, thorbis_pg_dsn)
        assert await app.cache.hash(key).get() is None
        assert worker.metrics.capture_losses == 1
        assert any("created again" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.ERROR)
        # Recorded: the next worker flushes nothing.
        await app.cache.hash(key).replace(stale_customer(1))
        assert (await _worker_drains(app, thorbis_pg_dsn)).metrics.capture_losses == 0
        assert await app.cache.hash(key).get() is not None
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}_backup"')
        await admin.close()


async def test_a_database_moved_to_another_cluster_leaves_nothing_stale(
    app: CacheApp, caplog: pytest.LogCaptureFixture
) -> None:
    """The same, restored into a new cluster (a move to another server or a managed
    service by dump and restore, or a major upgrade): another system identifier under
    the same database name flushes once."""
    key = CUSTOMER.key("acme", customer_id=5)  # no change to it on either server
    for n, phone in enumerate(("on the old server", "restored")):
        server = PostgresServer().start()
        try:
            dsn = server.dsn()
            await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin",
                                    "home_services", "--capture", "triggers")
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(CUSTOMER_SQL, "acme", 1)
            finally:
                await conn.close()
            if n == 1:
                await app.cache.hash(key).replace(attrs.evolve(stale_customer(5),
                                                               phone="on the old server"))
            worker = await _worker_drains(app, dsn)
            assert worker.metrics.capture_losses == n, phone
        finally:
            server.stop()
    assert await app.cache.hash(key).get() is None
    assert any("another cluster" in r.getMessage() for r in caplog.records
               if r.levelno == logging.ERROR)


async def test_a_standby_is_refused_naming_it(pair: Pair, thorbis_standalone_redis_url: str
                                              ) -> None:
    """Found as a user would, with a DSN that leads to a standby: ``db init`` failed with
    asyncpg's ``cannot execute CREATE SCHEMA in a read-only transaction`` traceback, and
    the worker said that change capture was not installed (a standby has no slot). Each
    now names the server and what to give instead; health says it; a multi-host DSN
    finds the primary."""
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", pair.primary.dsn(), "--plugin",
                            "home_services")
    conn = await asyncpg.connect(pair.primary.dsn())
    try:
        await _replayed(pair, conn)
    finally:
        await conn.close()
    standby = pair.standby.dsn()
    where = f"PostgreSQL at {HOST}:{pair.standby.port} is a standby (in recovery, read-only)"
    redis = ["--redis-url", thorbis_standalone_redis_url]
    for args, needs in [
        (["db", "init", "--dsn", standby, "--plugin", "home_services"],
         "applying the core migrations needs the primary"),
        (["worker", "--once", "--dsn", standby, "--plugin", "home_services", *redis],
         "the invalidation worker needs the primary"),
        (["worker", "--once", "--dsn", standby, "--plugin", "home_services",
          "--capture", "triggers", *redis], "the invalidation worker needs the primary"),
        (["refresh", "--all", "--dsn", standby, "--plugin", "home_services", *redis],
         "refreshing materialized views needs the primary"),
    ]:
        out = await asyncio.to_thread(run_cli, *args, code=1)
        assert where in out, args
        assert needs in out, args
        assert "target_session_attrs=read-write" in out
        assert "Traceback" not in out
    out = await asyncio.to_thread(run_cli, "health", "--dsn", standby, *redis, code=2)
    assert "a standby (in recovery, read-only)" in out
    app = CacheApp(thorbis_standalone_redis_url, postgres_dsn=standby,
                   keyring=KeyRing.generate())
    with pytest.raises(ConfigurationError, match="is a standby"):
        await app.start(["home_services"], apply_sql=True)
    # Both servers listed: the driver finds the primary.
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", pair.dsn, "--plugin",
                            "home_services")


@pytest.fixture
def lagging() -> Iterator[Pair]:
    """A primary and a standby that applies each commit 400 ms late
    (``recovery_min_apply_delay``): a read replica under load, deterministically."""
    # The worker must invalidate well within the replica's delay: under the test
    # servers' synchronous_commit=off a commit reaches the WAL (and the logical stream)
    # within wal_writer_delay, 200 ms by default, which made the margin one WAL writer
    # cycle and the test fail whenever a drain waited for a second one.
    with _primary_and_standby({"wal_writer_delay": "10ms"},
                              recovery_min_apply_delay="400ms") as servers:
        yield servers


async def test_a_reader_on_a_lagging_replica_never_keeps_the_old_row(
    lagging: Pair, mode: str, app: CacheApp
) -> None:
    """Found as a user would, with the host's reads on a streaming replica (the usual
    way to spread a database's read load): the worker invalidated a change within
    milliseconds of its commit on the primary, a reader then missed and loaded the row
    from the replica, which had not replayed the commit yet, and the cache kept the old
    row until its TTL. The worker now invalidates each change again once every standby
    has replayed it."""
    pair = lagging
    capture = await db_init(app, pair.primary.dsn(), mode)
    conn = await asyncpg.connect(pair.primary.dsn())
    replica = await asyncpg.connect(pair.standby.dsn())
    worker = OutboxWorker.from_app(app, pair.primary.dsn(), capture=capture)
    running = asyncio.create_task(worker.run())
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 1)
        await _replayed(pair, conn)
        key = CUSTOMER.key("acme", customer_id=1)

        async def load() -> Customer:
            return await loaders.customer(replica.fetch, "acme", 1)

        assert (await app.cache.hash(key).get_or_load(load)).phone == "555-0100"
        for round_ in range(3):
            phone = f"new {round_}"
            await conn.execute("UPDATE hs.customers SET phone = $1 WHERE id = 1", phone)
            await worker.drained()
            # The replica has not replayed the commit: the reader caches the old row.
            assert (await app.cache.hash(key).get_or_load(load)).phone != phone

            async def fresh(phone: str = phone) -> bool:
                return (await app.cache.hash(key).get_or_load(load)).phone == phone

            await wait_until("the cache serves the row the replica now has", fresh, 10)
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
        await worker.aclose()
        if capture is not None:
            await capture.drop(conn)
        await replica.close()
        await conn.close()


async def test_without_the_standbys_positions_the_second_pass_waits_a_fixed_delay(
    lagging: Pair, app: CacheApp, caplog: pytest.LogCaptureFixture
) -> None:
    """A role without ``pg_read_all_stats`` sees the standbys but not how far they have
    replayed: the second pass then comes after ``blind_delay``, and the worker says
    which grant would make it exact."""
    conn = await asyncpg.connect(lagging.primary.dsn())
    try:
        await conn.execute("CREATE ROLE app LOGIN")
        plain = await asyncpg.connect(lagging.primary.dsn().replace("postgres@", "app@"))
        key = CUSTOMER.key("acme", customer_id=5)
        echo = ReplicaEcho(app.cache, CacheTagInvalidator(app.cache), blind_delay=0.3)
        try:
            await echo.after_batch(plain, BatchResult(keys=(key.body,)))
            assert echo.pending == 1
            await app.cache.hash(key).replace(stale_customer(5))  # a reader refilled it
            assert await echo.settle(plain) == 0
            await asyncio.sleep(0.3)
            assert await echo.settle(plain) == 1
        finally:
            await plain.close()
        assert await app.cache.hash(key).get() is None
        assert "GRANT pg_read_all_stats TO app" in caplog.text
        # With the grant, the standby's position is read: no delay.
        await conn.execute("GRANT pg_read_all_stats TO app")
        plain = await asyncpg.connect(lagging.primary.dsn().replace("postgres@", "app@"))
        try:
            echo = ReplicaEcho(app.cache, CacheTagInvalidator(app.cache), blind_delay=3600)
            await echo.after_batch(plain, BatchResult(keys=(key.body,)))
            await app.cache.hash(key).replace(stale_customer(5))

            async def settled() -> bool:
                return await echo.settle(plain) == 1

            await wait_until("the standby replayed the batch", settled, 10)
        finally:
            await plain.close()
        assert await app.cache.hash(key).get() is None
    finally:
        await conn.close()


@pytest.mark.parametrize(("dsn", "hosts"), [
    ("postgresql://u@a:5432,b:5433/db?target_session_attrs=read-write",
     [("a", 5432), ("b", 5433)]),
    ("postgresql://u:p%40ss@a,[::1]:6000,%2Fvar%2Frun%2Fpg/db", [("a", None), ("::1", 6000),
                                                                ("/var/run/pg", None)]),
    ("postgresql://h/db", [("h", None)]),
    ("postgresql:///db", []),
    ("host=a,b dbname=db", []),
])
def test_the_hosts_of_a_dsn_are_read_in_order(dsn: str, hosts: list[tuple[str, int | None]]
                                              ) -> None:
    assert connection.hosts_of(dsn) == hosts
