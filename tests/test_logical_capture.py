"""Capture from the WAL (``thorbis_cache.postgres.logical``) end to end, with real
PostgreSQL (``wal_level=logical``) and Redis, and the home_services plugin.

The capture triggers ``db init`` installs are dropped first: every invalidation here
comes from the replication slot. Covered: a committed UPDATE invalidates; transactions
are applied in commit order (one that began earlier but commits later is still applied,
nothing skipped); a worker killed with SIGKILL after applying but before advancing the
slot loses nothing; while Redis is down the changes wait in the slot; a work order moved
to another technician drops both schedules (REPLICA IDENTITY FULL on that table only
where a rule reads an old non-key value); a lost slot is an error naming what may be
stale, never silently recreated; and the pgoutput parser on its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import attrs
import pytest
from core_testing import (
    CUSTOMER_SQL,
    NOW,
    TECH_SQL,
    WORK_ORDER_SQL,
    run_cli,
    stale_customer,
    wait_until,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from thorbis_home_services.schemas import CUSTOMER, TECHNICIAN_SCHEDULE

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation import slot_reader
from thorbis_cache.invalidation.batch import PLAN_CHUNK
from thorbis_cache.invalidation.planning import RulePlanner
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.observability.workers import WorkerCollector
from thorbis_cache.plugins.declarations import Operation
from thorbis_cache.postgres import logical_rows, pgoutput
from thorbis_cache.postgres.logical import (
    YIELD_EVERY,
    LogicalCapture,
    logical_unavailable,
    lsn_text,
    parse_lsn,
)
from thorbis_cache.postgres.logical_rows import TransactionDecoder, WatchedTable
from thorbis_cache.postgres.triggers import TablePlan, remove_triggers
from thorbis_cache.testing.servers import PostgresServer, RedisCluster, RedisServer


@attrs.frozen
class Env:
    dsn: str
    redis_url: str
    conn: asyncpg.Connection
    app: CacheApp
    capture: LogicalCapture
    name: str

    def worker(self, **options: object) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn, capture=self.capture, **options)

    async def cache_customer(self, tenant: str, cid: int) -> None:
        stale = stale_customer(cid)
        await self.app.cache.hash(CUSTOMER.key(tenant, customer_id=cid)).replace(stale)

    async def cached(self, tenant: str, cid: int) -> bool:
        key = CUSTOMER.key(tenant, customer_id=cid)
        return await self.app.cache.hash(key).get() is not None

    async def confirmed(self) -> int:
        text = await self.conn.fetchval(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            self.capture.slot)
        return parse_lsn(text)

    async def settled(self) -> int:
        """The slot's confirmed position once it stops moving: the worker's last
        confirmation reaches the slot a moment after the batch is counted as applied."""
        last = await self.confirmed()
        for _ in range(50):
            await asyncio.sleep(0.3)
            now = await self.confirmed()
            if now == last:
                return now
            last = now
        raise AssertionError("the slot's confirmed position kept moving")

    async def confirmed_past(self, lsn: int) -> None:
        """The worker's confirmation reaches the slot (a status update on the stream,
        processed by the WAL sender a moment later)."""
        async def past() -> bool:
            return await self.confirmed() > lsn

        await wait_until(f"the slot is confirmed past {lsn_text(lsn)}", past)


async def connect(dsn: str) -> asyncpg.Connection:
    """A writer whose commits are flushed at once: logical decoding reads flushed WAL
    only, and the test server runs ``synchronous_commit=off`` (a commit there reaches
    the slot within the WAL writer's delay, 200 ms)."""
    return await asyncpg.connect(dsn, server_settings={"synchronous_commit": "on"})


async def open_env(dsn: str, redis_url: str) -> Env:
    # Triggers first, so that dropping them proves nothing on the write path is needed;
    # the test's own slot follows.
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
                            "--capture", "triggers")
    app = await CacheApp(redis_url, keyring=KeyRing.generate()).start(["home_services"])
    conn = await connect(dsn)
    # No trigger on the write path: whatever is invalidated comes from the WAL.
    assert await remove_triggers(conn), "db init installed no capture trigger to drop"
    name = f"t{uuid.uuid4().hex[:12]}"
    capture = LogicalCapture(name, app.plugins.all_rules(), app.plugins.all_views())
    await capture.ensure(conn)
    return Env(dsn, redis_url, conn, app, capture, name)


async def close_env(env: Env) -> None:
    # A slot left behind would keep WAL and block dropping the test database.
    await env.capture.drop(env.conn)
    await env.conn.close()
    await env.app.aclose()


@pytest.fixture
async def env(thorbis_pg_dsn: str, thorbis_redis_url: str) -> AsyncIterator[Env]:
    env = await open_env(thorbis_pg_dsn, thorbis_redis_url)
    try:
        yield env
    finally:
        await close_env(env)


async def test_committed_update_invalidates_from_the_wal(env: Env) -> None:
    await env.conn.execute(CUSTOMER_SQL, "acme", 2)
    async with env.worker() as worker:
        created = await worker.run_once()
        assert len(created.processed) == 2
        await env.cache_customer("acme", 1)
        await env.cache_customer("acme", 2)
        await env.conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 1")
        before = await env.confirmed()
        updated = await worker.run_once()
        assert updated.keys == ("{acme}:hs.customer:1",)
        assert not await env.cached("acme", 1)
        assert await env.cached("acme", 2)
        await env.confirmed_past(before)  # confirmed once applied
        assert (await worker.run_once()).claimed == 0  # caught up
        # A DELETE on a FULL-identity table carries the old row.
        await env.conn.execute("DELETE FROM hs.customers WHERE id = 2")
        deleted = await worker.run_once()
        assert deleted.keys == ("{acme}:hs.customer:2",)
        assert not await env.cached("acme", 2)
    assert await env.conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0
    assert worker.metrics.processed == 4


async def test_a_lost_slot_is_flushed_loudly_then_recreated(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot dropped (or invalidated past max_slot_wal_keep_size) lost the changes since
    its last confirmed position: the worker never goes on silently. It invalidates every
    tag the lost tables' rules reach, for every tenant, recreates the slot, and says so."""
    await env.conn.execute(CUSTOMER_SQL, "acme", 2)
    async with env.worker() as worker:
        await worker.run_once()
        await env.cache_customer("acme", 1)
        await env.cache_customer("acme", 2)
        await env.capture.drop(env.conn)
        # Committed while no slot exists: no capture will ever see it.
        await env.conn.execute("UPDATE hs.customers SET phone = 'lost' WHERE id = 1")
        with caplog.at_level(logging.ERROR):
            assert (await worker.run_once()).claimed == 0
        assert "cannot be read" in caplog.text
        assert "lost track of hs." in caplog.text
        assert not await env.cached("acme", 1)  # its change was lost: flushed
        assert not await env.cached("acme", 2)  # nothing proves it fresh either
        assert worker.metrics.capture_losses == 1
        assert await env.capture.slot_exists(env.conn)
        # Capture goes on from the new slot.
        await env.cache_customer("acme", 2)
        await env.conn.execute("UPDATE hs.customers SET phone = 'y' WHERE id = 2")
        assert (await worker.run_once()).keys == ("{acme}:hs.customer:2",)
        assert not await env.cached("acme", 2)


@pytest.mark.slow
async def test_a_slot_invalidated_past_its_wal_limit_is_flushed_and_recreated(
    thorbis_standalone_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker down while the host writes more WAL than ``max_slot_wal_keep_size``:
    PostgreSQL invalidates the slot rather than fill the disk, and the worker that
    comes back finds it lost, flushes what it cannot prove fresh, and recreates it."""
    settings = {"max_slot_wal_keep_size": "1MB", "min_wal_size": "32MB",
                "max_wal_size": "32MB"}
    with PostgresServer(settings=settings) as server:
        env = await open_env(server.dsn(), thorbis_standalone_redis_url)
        try:
            await env.conn.execute(CUSTOMER_SQL, "acme", 2)
            async with env.worker() as worker:
                await worker.run_once()
            await env.cache_customer("acme", 1)
            await env.cache_customer("acme", 2)
            # The worker is down: this change waits in the slot, then is lost with it.
            await env.conn.execute("UPDATE hs.customers SET phone = 'lost' WHERE id = 1")
            await env.conn.execute("CREATE TABLE filler (v text)")
            for _ in range(20):
                await env.conn.execute("INSERT INTO filler SELECT repeat('x', 1000) "
                                       "FROM generate_series(1, 4000)")
                await env.conn.execute("SELECT pg_switch_wal()")
                await env.conn.execute("CHECKPOINT")
                if await env.capture.slot_lost(env.conn):
                    break
            assert await env.capture.slot_lost(env.conn), "the slot was not invalidated"
            async with env.worker() as worker:
                with caplog.at_level(logging.ERROR):
                    assert (await worker.run_once()).claimed == 0
                assert worker.metrics.capture_losses == 1
            assert "cannot be read" in caplog.text
            assert not await env.cached("acme", 1)  # its change was lost: flushed
            assert not await env.cached("acme", 2)  # nothing proves it fresh either
            assert not await env.capture.slot_lost(env.conn)  # recreated
            async with env.worker() as worker:
                await env.cache_customer("acme", 2)
                await env.conn.execute("UPDATE hs.customers SET phone = 'y' WHERE id = 2")
                assert (await worker.run_once()).keys == ("{acme}:hs.customer:2",)
        finally:
            await close_env(env)


async def test_run_once_reads_a_commit_not_yet_flushed(env: Env) -> None:
    """Under ``synchronous_commit=off`` (the test server's default) a commit returns
    before its WAL is flushed; the batch after it must still read it."""
    await env.conn.execute(CUSTOMER_SQL, "acme", 1)
    lazy = await asyncpg.connect(env.dsn, server_settings={"synchronous_commit": "off"})
    try:
        async with env.worker() as worker:
            await worker.run_once()
            for round_ in range(5):
                await env.cache_customer("acme", 1)
                await lazy.execute("UPDATE hs.customers SET phone = $1 WHERE id = 1",
                                   f"lazy{round_}")
                assert (await worker.run_once()).keys == ("{acme}:hs.customer:1",)
                assert not await env.cached("acme", 1)
    finally:
        await lazy.close()


async def test_changes_apply_in_commit_order_and_a_late_commit_is_not_skipped(
    env: Env
) -> None:
    await env.conn.execute(CUSTOMER_SQL, "acme", 3)
    async with env.worker() as worker:
        await worker.run_once()
        late = await connect(env.dsn)
        try:
            # Began first, commits last: its change has the smaller LSN.
            tx = late.transaction()
            await tx.start()
            await late.execute("UPDATE hs.customers SET phone = 'late' WHERE id = 1")
            await env.conn.execute("UPDATE hs.customers SET phone = 'early' WHERE id = 2")
            first = await worker.run_once()
            assert first.keys == ("{acme}:hs.customer:2",)  # only what is committed
            await env.cache_customer("acme", 1)
            await tx.commit()
        finally:
            await late.close()
        await env.conn.execute("UPDATE hs.customers SET phone = 'last' WHERE id = 3")
        second = await worker.run_once()
    # The late transaction comes before the one committed after it, and is not skipped
    # although a change with a greater LSN was applied and confirmed before it.
    assert second.keys == ("{acme}:hs.customer:1", "{acme}:hs.customer:3")
    assert second.processed[0] < first.processed[0]  # its LSN is older
    assert not await env.cached("acme", 1)


async def test_moved_work_order_drops_both_technicians_schedules(env: Env) -> None:
    identities = dict(await env.conn.fetch(
        "SELECT c.oid::regclass::text, c.relreplident::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'hs' "
        "AND c.relkind = 'r'"))
    # FULL where a rule reads a non-key column of the old row, and only there.
    for table, plan in env.capture.plans.items():
        key_only = set(plan.columns) <= {"tenant_id", "id"}
        assert identities[table] == ("d" if key_only else "f"), table
    assert identities["hs.work_orders"] == "f"
    await env.conn.execute(CUSTOMER_SQL, "acme", 1)
    await env.conn.execute(TECH_SQL, "acme", 10)
    await env.conn.execute(TECH_SQL, "acme", 11)
    await env.conn.execute(WORK_ORDER_SQL, "acme", 100, 1, 10, NOW)
    async with env.worker() as worker:
        await worker.run_once()
        day = NOW.date()
        old = TECHNICIAN_SCHEDULE.key("acme", technician_id=10, day=day)
        new = TECHNICIAN_SCHEDULE.key("acme", technician_id=11, day=day + dt.timedelta(days=1))
        for key in (old, new):
            await env.app.cache.zset(key).add({100: 1.0}, replace=True)
        await env.conn.execute("UPDATE hs.work_orders SET assigned_technician_id = 11, "
                               "scheduled_at = scheduled_at + interval '1 day'")
        moved = await worker.run_once()
    assert old.body in moved.keys
    assert new.body in moved.keys
    assert await env.app.cache.zset(old).card() == 0
    assert await env.app.cache.zset(new).card() == 0


_KILLED_WORKER = textwrap.dedent("""
    import asyncio, sys, time
    from thorbis_cache import CacheApp, KeyRing
    from thorbis_cache.postgres.logical import LogicalCapture, LogicalStream
    from thorbis_cache.invalidation.worker import OutboxWorker

    def confirm(self, lsn=None):
        if lsn is not None:
            # Applied and committed, not yet confirmed: the parent kills us here.
            print("applied", flush=True)
            time.sleep(3600)

    LogicalStream.confirm = confirm

    async def main(dsn, redis_url, name):
        app = await CacheApp(redis_url, keyring=KeyRing.generate()).start(["home_services"])
        capture = LogicalCapture(name, app.plugins.all_rules(), app.plugins.all_views())
        worker = OutboxWorker.from_app(app, dsn, capture=capture)
        await worker.run_once()

    asyncio.run(main(*sys.argv[1:]))
""")


async def test_a_worker_killed_before_advancing_loses_nothing(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    env = await open_env(thorbis_pg_dsn, thorbis_standalone_redis_url)
    try:
        await env.conn.execute(CUSTOMER_SQL, "acme", 5)
        before = await env.confirmed()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KILLED_WORKER, env.dsn, env.redis_url, env.name,
            stdout=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"applied"
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
        assert await env.confirmed() == before  # the slot did not move
        # Entries filled again from the old rows (a reader raced the killed worker)
        # are dropped by the next worker, which reads the same transaction again.
        for cid in range(1, 6):
            await env.cache_customer("acme", cid)
        async with env.worker() as worker:
            again = await worker.run_once()
        assert len(again.processed) == 5
        assert not any([await env.cached("acme", cid) for cid in range(1, 6)])
        await env.confirmed_past(before)
    finally:
        await close_env(env)


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this module's own, to kill, that comes back with the entries it held
    (every write fsynced to its AOF before it is acknowledged)."""
    with RedisServer(appendonly=True, extra_args=["--appendfsync", "always"]) as server:
        yield server


async def test_changes_wait_in_the_slot_while_redis_is_down(
    thorbis_pg_dsn: str, own_redis: RedisServer
) -> None:
    if not own_redis.ping():
        own_redis.restart()
    own_redis.flushall()
    env = await open_env(thorbis_pg_dsn, own_redis.url)
    try:
        await env.conn.execute(CUSTOMER_SQL, "acme", 3)
        worker = env.worker(poll_interval=0.05)
        task = asyncio.create_task(worker.run(), name="logical-worker")
        try:
            async def drained() -> bool:
                return worker.metrics.processed == 3

            await wait_until("the inserts are applied", drained)
            for cid in (1, 2):
                await env.cache_customer("acme", cid)  # back from the AOF after restart
            own_redis.kill()
            before = await env.settled()
            await env.conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id <= 2")

            async def waiting() -> bool:
                return worker.metrics.redis_probes >= 3

            await wait_until("the worker probes the dead Redis", waiting)
            assert await env.confirmed() == before  # the changes wait in the slot
            assert worker.metrics.processed == 3
            await asyncio.to_thread(own_redis.restart)

            async def applied() -> bool:
                return worker.metrics.processed == 5

            await wait_until("the backlog is applied", applied)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)
            await worker.aclose()
        assert not await env.cached("acme", 1)
        assert not await env.cached("acme", 2)
        await env.confirmed_past(before)
    finally:
        await close_env(env)


@pytest.mark.slow
async def test_a_whole_cluster_down_keeps_changes_in_the_slot_until_it_is_back(
    thorbis_pg_dsn: str, thorbis_cluster_redis_url: str, thorbis_redis_cluster: RedisCluster
) -> None:
    """Every node of the replicated Cluster killed while changes commit: nothing is
    dead-lettered or confirmed; once the Cluster is repaired the worker applies them."""
    env = await open_env(thorbis_pg_dsn, thorbis_cluster_redis_url)
    cluster = thorbis_redis_cluster
    n = 10
    try:
        await env.conn.execute(CUSTOMER_SQL, "acme", n)
        worker = env.worker(poll_interval=0.05, max_attempts=2)
        task = asyncio.create_task(worker.run(), name="logical-worker")
        try:
            async def inserted() -> bool:
                return worker.metrics.processed == n

            await wait_until("the inserts are applied", inserted)
            for cid in range(1, n + 1):
                await env.cache_customer("acme", cid)
            before = await env.settled()
            for index in range(len(cluster.nodes)):
                cluster.kill(index)
            await env.conn.execute("UPDATE hs.customers SET phone = 'x'")

            async def failed() -> bool:
                return worker.metrics.failed_batches + worker.metrics.redis_probes >= 3

            await wait_until("the worker meets the dead Cluster", failed)
            assert await env.confirmed() == before  # the changes wait in the slot
            assert worker.metrics.dead_lettered == 0
            await asyncio.to_thread(cluster.repair)

            async def applied() -> bool:
                return worker.metrics.processed == 2 * n

            await wait_until("the backlog is applied after the repair", applied, 60)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)
            await worker.aclose()
        assert worker.metrics.dead_lettered == 0
        assert not any([await env.cached("acme", cid) for cid in range(1, n + 1)])
        await env.confirmed_past(before)
    finally:
        cluster.repair()
        await close_env(env)


# --------------------------------------------------------------------------- the parser


def test_pgoutput_messages_parse() -> None:
    import struct

    relations: dict[int, pgoutput.Relation] = {}
    begin = pgoutput.parse(b"B" + struct.pack("!qqI", 100, 1_000_000, 7), relations)
    assert begin == pgoutput.Begin(100, dt.datetime(2000, 1, 1, 0, 0, 1, tzinfo=dt.UTC), 7)
    relation = (b"R" + struct.pack("!I", 42) + b"hs\0t\0f" + struct.pack("!h", 2)
                + b"\x01id\0" + struct.pack("!Ii", 23, -1)
                + b"\x00v\0" + struct.pack("!Ii", 25, -1))
    parsed = pgoutput.parse(relation, relations)
    assert isinstance(parsed, pgoutput.Relation)
    assert parsed.table == "hs.t"
    assert relations[42].columns[0].key

    def tup(*values: bytes | None) -> bytes:
        out = struct.pack("!h", len(values))
        for v in values:
            out += b"n" if v is None else b"t" + struct.pack("!i", len(v)) + v
        return out

    update = b"U" + struct.pack("!I", 42) + b"O" + tup(b"1", b"a") + b"N" + tup(b"1", None)
    change = pgoutput.parse(update, relations)
    assert change == pgoutput.Change(42, "UPDATE", {"id": "1", "v": "a"}, False,
                                     {"id": "1", "v": None})
    unchanged = b"U" + struct.pack("!I", 42) + b"N" + struct.pack("!h", 2) + b"t" + \
        struct.pack("!i", 1) + b"2u"
    change = pgoutput.parse(unchanged, relations)
    assert isinstance(change, pgoutput.Change)
    assert change.old is None
    assert change.new == {"id": "2", "v": pgoutput.UNCHANGED}
    with pytest.raises(ValueError, match="before its Relation"):
        pgoutput.parse(b"D" + struct.pack("!I", 9) + b"K" + tup(b"1"), relations)
    body = b'{"table": "hs.t", "operation": "TRUNCATE"}'
    message = b"M\x01" + struct.pack("!Q", 104) + b"thorbis_cache\0" + struct.pack(
        "!i", len(body)) + body
    assert pgoutput.parse(message, relations) == pgoutput.LogicalMessage(
        True, "thorbis_cache", body)
    with pytest.raises(ValueError, match="logical message of 42 bytes, 41 sent"):
        pgoutput.parse(message[:-1], relations)
    commit = pgoutput.parse(b"C\0" + struct.pack("!qqq", 100, 108, 0), relations)
    assert commit == pgoutput.Commit(100, 108, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert parse_lsn(lsn_text(0x16_B374D848)) == 0x16_B374D848


def _transaction(tenants: list[str | None], truncate_at: int | None = None) -> list[bytes]:
    """The pgoutput messages of one transaction: an UPDATE of a row of ``hs.t`` per
    tenant (None: a TRUNCATE of the table instead), after its Relation message."""
    import struct

    def tup(*values: bytes) -> bytes:
        return struct.pack("!h", len(values)) + b"".join(
            b"t" + struct.pack("!i", len(v)) + v for v in values)

    out = [b"B" + struct.pack("!qqI", 10_000, 1_000_000, 7),
           b"R" + struct.pack("!I", 42) + b"hs\0t\0f" + struct.pack("!h", 3)
           + b"\x01tenant_id\0" + struct.pack("!Ii", 25, -1)
           + b"\x01id\0" + struct.pack("!Ii", 23, -1)
           + b"\x00v\0" + struct.pack("!Ii", 25, -1)]
    for i, tenant in enumerate(tenants):
        if tenant is None or i == truncate_at:
            out.append(b"T" + struct.pack("!ib", 1, 0) + struct.pack("!I", 42))
        else:
            row = tup(tenant.encode(), str(i).encode(), b"x")
            out.append(b"U" + struct.pack("!I", 42) + b"O" + row + b"N" + row)
    out.append(b"C\0" + struct.pack("!qqq", 10_000, 10_008, 0))
    return out


def _watched() -> dict[str, WatchedTable]:
    plan = TablePlan("hs.t", "tenant_id", ("tenant_id", "id", "v"),
                     frozenset(Operation), ())
    return {"hs.t": WatchedTable(plan, ("tenant_id", "id"), {}, True, 42, "hs.t")}


@settings(max_examples=200, deadline=None)
@given(tenants=st.lists(st.one_of(st.sampled_from(["a", "b", "c", "d", "e"]), st.none()),
                        max_size=40),
       max_held=st.integers(1, 12), max_tenants=st.integers(1, 6))
def test_a_bulk_transaction_is_held_by_tenant_and_covers_every_change(
    tenants: list[str | None], max_held: int, max_tenants: int
) -> None:
    """Memory stays bounded (never more than ``max_held`` changes held), and what comes
    out covers every change: a transaction within the bound comes out row by row; past
    it, one tenant-wide TRUNCATE per tenant it touched, or one of every tenant when a
    TRUNCATE, or more than MAX_SPREAD_TENANTS tenants, left no tenant to name."""
    decoder = TransactionDecoder(_watched(), max_held)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logical_rows, "MAX_SPREAD_TENANTS", max_tenants)
        for lsn, message in enumerate(_transaction(tenants)):
            decoder.feed(100 + lsn * 24, message)
            assert len(decoder.current) <= max_held
    done, _, transactions, bulk = decoder.take()
    assert transactions == 1
    if len(tenants) <= max_held:
        assert bulk == 0
        assert [c.change.operation for c in done] == [
            "TRUNCATE" if t is None else "UPDATE" for t in tenants]
        return
    assert bulk == 1
    assert {c.change.operation for c in done} == {"TRUNCATE"}
    named = [None if c.change.new is None else c.change.new["tenant_id"] for c in done]
    if None in tenants or len(set(tenants)) > max_tenants:
        assert named == [None]
    else:
        assert named == sorted(set(tenants))
    assert len({c.lsn for c in done}) == len(done)  # each named by its own LSN


async def test_a_bulk_transaction_is_applied_by_tenant(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Found as a user would: a transaction is applied whole, after its commit, and its
    changes were held row by row until then: a 200,000-row backfill took 455 MB of the
    worker, and millions of rows would kill it at every restart (the slot sends the same
    transaction again). Past ``max_transaction_changes`` the worker keeps the tenants
    each table's changes touched instead, and invalidates every tag the table's rules
    reach for each of them (``thorbis_cache_worker_bulk_transactions_total``)."""
    env.capture.max_transaction_changes = 50
    await env.conn.execute(CUSTOMER_SQL, "acme", 120)  # a bulk transaction itself
    await env.conn.execute(CUSTOMER_SQL, "globex", 3)
    await env.conn.execute(CUSTOMER_SQL, "initech", 3)
    async with env.worker() as worker:
        await worker.drain()
        assert worker.metrics.bulk_transactions == 1
        for tenant, cid in (("acme", 7), ("globex", 1), ("initech", 1)):
            await env.cache_customer(tenant, cid)
        caplog.clear()
        await env.conn.execute("UPDATE hs.customers SET account_status = 'suspended' "
                               "WHERE tenant_id IN ('acme', 'globex')")
        results = await worker.drain()
        assert worker.metrics.bulk_transactions == 2
        assert not {k for r in results for k in r.keys}
        tags = {t for r in results for t in r.tags}
        assert {("acme", "hs.customers"), ("globex", "hs.customers")} <= tags
        assert not {t for t in tags if t[0] == "initech"}
        assert not await env.cached("acme", 7)
        assert not await env.cached("globex", 1)
        assert await env.cached("initech", 1)
        assert "invalidated by tenant instead of by row" in caplog.text
        assert "hs.customers: 2 tenant(s)" in caplog.text
        # A transaction within the bound is applied by row again.
        await env.conn.execute("UPDATE hs.customers SET phone = 'x' "
                               "WHERE tenant_id = 'initech' AND id = 1")
        assert {k for r in await worker.drain() for k in r.keys} == {
            "{initech}:hs.customer:1"}
    exporter = WorkerCollector(worker.metrics)
    assert any(s.name == "thorbis_cache_worker_bulk_transactions_total" and s.value == 3 - 1
               for family in exporter.collect() for s in family.samples)


async def test_drain_returns_once_a_big_transaction_is_applied(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found with bench/bulk_transaction.py: drain() returned with a million-row INSERT
    not applied. One read of the stream waits 5 s for the server to reach the position
    asked for, and the server was still decoding the transaction's WAL: the empty batch
    read as caught up. The reader now reads on while the stream moves (here a read
    waits 100 ms, so that 20,000 rows take several; at 10 ms a loaded CI box once went
    a whole read without a message while the server decoded)."""
    monkeypatch.setattr(slot_reader, "READ_WAIT", 0.1)
    async with env.worker() as worker:
        await worker.drain()
        await env.conn.execute(CUSTOMER_SQL, "acme", 20_000)
        results = await worker.drain()
        assert sum(len(r.processed) for r in results) == 20_000
        assert worker.metrics.bulk_transactions == 0  # held row by row: 20,000 < 50,000


async def test_the_worker_loop_turns_while_a_big_transaction_is_applied(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found as a user would, watching the worker's /health during a backfill: a server
    streams a big transaction faster than the worker decodes it, so the decoding (and
    then turning 40,000 changes into rows and planning them) held the worker's event
    loop for 820 ms (2 s at 200,000 rows): its /metrics and /health went unanswered,
    and a liveness probe would restart it into the same transaction. Now the loop turns
    every YIELD_EVERY messages decoded and every PLAN_CHUNK rows planned (counted
    between two turns of another task, not timed)."""
    counts = {"fed": 0, "planned": 0}
    feed, plan = TransactionDecoder.feed, RulePlanner.plan

    def counted_feed(self: TransactionDecoder, lsn: int, data: bytes) -> bool:
        counts["fed"] += 1
        return feed(self, lsn, data)

    def counted_plan(self: RulePlanner, row: Any) -> Any:
        counts["planned"] += 1
        return plan(self, row)

    monkeypatch.setattr(TransactionDecoder, "feed", counted_feed)
    monkeypatch.setattr(RulePlanner, "plan", counted_plan)
    most = {"fed": 0, "planned": 0}

    async def beat() -> None:
        last = dict(counts)
        while True:
            await asyncio.sleep(0)
            for name, count in counts.items():
                most[name] = max(most[name], count - last[name])
            last = dict(counts)

    async with env.worker() as worker:
        await worker.drain()
        await env.conn.execute(CUSTOMER_SQL, "acme", 20_000)
        beating = asyncio.create_task(beat())
        try:
            results = await worker.drain()
        finally:
            beating.cancel()
    assert sum(len(r.processed) for r in results) == 20_000
    assert counts["fed"] > 20_000
    assert most["fed"] <= YIELD_EVERY
    assert most["planned"] <= PLAN_CHUNK


async def test_auto_capture_needs_a_bound_on_slot_wal_and_a_slot_of_its_own(
    thorbis_pg_dsn: str
) -> None:
    """``--capture auto`` picks logical only where a stopped worker's slot cannot fill
    the disk, and a slot name taken by another database is refused, not shared."""
    with PostgresServer(settings={"max_slot_wal_keep_size": "-1"}) as unbounded:
        out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", unbounded.dsn(),
                                      "--plugin", "home_services", "--capture", "auto")
    assert "capture: triggers (max_slot_wal_keep_size is -1" in out
    assert "capture trigger on hs.customers" in out
    name = f"s{uuid.uuid4().hex[:10]}"
    conn = await connect(thorbis_pg_dsn)
    try:
        assert await logical_unavailable(conn) is None  # the test server sets a bound
        await conn.execute(f"CREATE DATABASE {name}_b")
        try:
            other = thorbis_pg_dsn.rsplit("/", 1)[0] + f"/{name}_b"
            await asyncio.to_thread(run_cli, "db", "init", "--dsn", other, "--plugin",
                                    "home_services", "--capture", "logical", "--slot", name)
            refused = await asyncio.to_thread(
                run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin", "home_services",
                "--capture", "logical", "--slot", name, code=1)
            assert f"replication slot 'thorbis_{name}' exists for database '{name}_b'" in refused
        finally:
            await conn.execute("SELECT pg_drop_replication_slot($1)", f"thorbis_{name}")
            await conn.execute(f"DROP DATABASE {name}_b")
    finally:
        await conn.close()


async def test_db_init_and_the_cli_worker_switch_to_logical_capture(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One switch: ``db init --capture logical`` sets up the slot and drops the capture
    triggers; ``worker --capture auto`` follows the slot it finds; ``--capture logical``
    without a slot is refused with the command that makes one."""
    dsn, url = thorbis_pg_dsn, thorbis_standalone_redis_url
    name = f"c{uuid.uuid4().hex[:10]}"
    worker_args = ("worker", "--dsn", dsn, "--redis-url", url, "--plugin", "home_services",
                   "--once", "--no-queue", "--no-mv", "--slot", name)
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
                            "--capture", "triggers")
    refused = await asyncio.to_thread(run_cli, *worker_args, "--capture", "logical", code=64)
    assert f"db init --capture logical --slot {name}" in refused
    out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", dsn, "--plugin",
                                  "home_services", "--capture", "logical", "--slot", name)
    assert f"logical capture thorbis_{name} ready" in out
    assert "capture trigger dropped" in out
    conn = await connect(dsn)
    app = await CacheApp(url, keyring=KeyRing.generate()).start(["home_services"])
    capture = LogicalCapture(name, app.plugins.all_rules(), app.plugins.all_views())
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 1)
        stale = stale_customer(1)
        key = CUSTOMER.key("acme", customer_id=1)
        await app.cache.hash(key).replace(stale)
        await conn.execute("UPDATE hs.customers SET phone = 'new' WHERE id = 1")
        await asyncio.to_thread(run_cli, *worker_args)  # --capture auto: the slot exists
        assert await app.cache.hash(key).get() is None
        assert await conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0
        # The bound on a transaction's held changes, from the command line: a
        # three-row INSERT past it invalidates acme's tags (customer 1's entry too).
        await app.cache.hash(key).replace(stale)
        await conn.execute(CUSTOMER_SQL.replace("SELECT $1, i", "SELECT $1, i + 1"),
                           "acme", 3)
        with caplog.at_level(logging.WARNING):
            await asyncio.to_thread(run_cli, *worker_args, "--max-transaction-changes", "2")
        assert "3 rows of watched tables, more than the 2" in caplog.text
        assert await app.cache.hash(key).get() is None
    finally:
        await capture.drop(conn)
        await conn.close()
        await app.aclose()


def _as_role(dsn: str, role: str, password: str, database: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, parts.fragment))


async def test_a_role_without_replication_gets_triggers_or_a_clear_refusal(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    """Found as a user would: ``db init`` run as the application's own role (which owns
    its tables but is neither superuser nor REPLICATION, as on most servers) crashed
    with asyncpg's InsufficientPrivilegeError, under the default ``--capture auto`` too,
    after setting REPLICA IDENTITY FULL and creating the publication. Now ``auto`` picks
    triggers and says why; ``logical`` is refused before anything changes, naming the
    role and the grant it lacks; a worker on a slot made by an administrator refuses the
    same way."""
    name = f"r{uuid.uuid4().hex[:10]}"
    admin = await connect(thorbis_pg_dsn)
    await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'pw'")
    await admin.execute(f"CREATE DATABASE {name} OWNER {name}")
    dsn = _as_role(thorbis_pg_dsn, name, "pw", name)
    admin_dsn = thorbis_pg_dsn.rsplit("/", 1)[0] + f"/{name}"
    try:
        refused = await asyncio.to_thread(
            run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
            "--capture", "logical", "--slot", name, code=1)
        assert f"role {name!r} may not use replication slots" in refused, refused
        assert f"ALTER ROLE {name} REPLICATION" in refused
        assert "--capture triggers" in refused
        assert "Traceback" not in refused
        conn = await connect(dsn)
        try:
            # Refused before anything changed.
            assert await conn.fetchval("SELECT count(*) FROM pg_publication") == 0
            assert await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relreplident = 'f'") == 0
            out = await asyncio.to_thread(
                run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
                "--capture", "auto", "--slot", name)
            assert f"capture: triggers (role {name!r} may not use replication slots" in out
            assert "capture trigger on hs.customers" in out
            # An administrator sets the slot up; the worker, as the role, is refused.
            await asyncio.to_thread(
                run_cli, "db", "init", "--dsn", admin_dsn, "--plugin", "home_services",
                "--capture", "logical", "--slot", name)
            boxed = await asyncio.to_thread(
                run_cli, "worker", "--dsn", dsn, "--redis-url", thorbis_standalone_redis_url,
                "--plugin", "home_services", "--once", "--no-queue", "--no-mv",
                "--slot", name, "--capture", "logical", code=64)
            worker = " ".join(re.sub("[│╭╮╰╯─]", " ", boxed).split())  # rich's box, unwrapped
            assert f"role {name!r} may not use replication slots" in worker, worker
            assert f"ALTER ROLE {name} REPLICATION" in worker
            assert "Traceback" not in worker
            # The role's own `db init` (auto, as its app's start runs it) keeps the
            # administrator's slot: no capture triggers on top of it. A rule's table
            # the publication lacks is refused by name, never covered by triggers.
            kept = await asyncio.to_thread(
                run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
                "--slot", name)
            assert f"logical capture thorbis_{name} kept as it was set up (role " \
                   f"{name!r} may not use replication slots" in kept, kept
            assert "capture trigger" not in kept
            # Pruning changes the capture: refused by name, not skipped in silence.
            pruned = await asyncio.to_thread(
                run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
                "--slot", name, "--prune", code=1)
            assert f"--prune changes logical capture thorbis_{name}" in " ".join(
                pruned.split()), pruned
            assert await conn.fetchval("SELECT count(*) FROM pg_trigger t JOIN pg_proc p "
                                       "ON p.oid = t.tgfoid WHERE p.proname LIKE "
                                       "'capture\\_%'") == 0
            admin_conn = await connect(admin_dsn)
            try:
                await admin_conn.execute(
                    f"ALTER PUBLICATION thorbis_{name} DROP TABLE hs.customers")
            finally:
                await admin_conn.close()
            lacking = await asyncio.to_thread(
                run_cli, "db", "init", "--dsn", dsn, "--plugin", "home_services",
                "--slot", name, code=1)
            assert "hs.customers (rules hs.customer_entity" in lacking, lacking
            assert f"not in publication thorbis_{name}" in lacking
        finally:
            await conn.close()
    finally:
        await admin.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = $1", f"thorbis_{name}")
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE {name}")
        await admin.close()


async def test_a_server_without_a_free_replication_slot_is_said_before_anything_changes(
) -> None:
    """Found as a user would: on a server whose slots its standbys and other tools had
    taken, ``db init --capture auto`` ended in PostgreSQL's traceback ("all replication
    slots are in use"), after it had set the replica identities and made the
    publication. ``auto`` now chooses triggers there and says why; ``logical`` refuses
    in one line naming the slots, before anything is changed."""
    with PostgresServer(settings={"max_replication_slots": "2"}) as server:
        conn = await connect(server.dsn())
        try:
            for name in ("standby_a", "backup_tool"):
                await conn.execute("SELECT pg_create_physical_replication_slot($1)", name)
            out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", server.dsn(),
                                          "--plugin", "home_services", "--capture", "auto")
            assert "capture: triggers (all 2 replication slots are in use" in out, out
            assert "capture trigger on hs.customers" in out
            refused = await asyncio.to_thread(
                run_cli, "db", "init", "--dsn", server.dsn(), "--plugin", "home_services",
                "--capture", "logical", code=1)
            text = " ".join(refused.split())
            assert "all 2 replication slots are in use" in text, text
            assert "backup_tool (physical, not read)" in text, text
            assert "Traceback" not in refused
            assert not await conn.fetchval("SELECT count(*) FROM pg_publication")
            assert await conn.fetchval(
                "SELECT relreplident::text FROM pg_class WHERE oid = 'hs.work_orders'::regclass"
            ) == "d"
        finally:
            await conn.close()
