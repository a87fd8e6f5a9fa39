"""Proof that committed PostgreSQL changes reach the cache, with real servers.

The home_services plugin's tables, capture triggers and outbox worker, end to end:

* a committed UPDATE drops the cached customer and its summary, and its lists only when a
  significant column changed (``test_worker.py`` covers the customer hash and the tags
  named; here the tagged entries themselves disappear through the tag engine);
* a worker process SIGKILLed mid-batch loses nothing: its claim rolls back, and the next
  worker applies every change;
* Redis killed while changes are pending: the rows wait with no attempt counted, and are
  applied once Redis is back;
* the fill-after-invalidate race, over many concurrent rounds: a loader that read the old
  row before the commit never leaves a stale value in Redis.

The audit chain's tamper detection is proven in ``test_audit.py``. No wall-clock
assertion: every wait is bounded and fails with what it waited for.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import attrs
import pytest
import redis.asyncio as aioredis
from core_testing import wait_until
from thorbis_home_services import loaders
from thorbis_home_services.models import CustomerSegment, WorkOrder
from thorbis_home_services.schemas import CUSTOMER, CUSTOMER_LIST, CUSTOMER_SUMMARY, WORK_ORDER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation.database_origin import origin_of
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.mv.refresh import refresh_and_invalidate
from thorbis_cache.postgres import apply_and_check
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.testing.servers import RedisCluster, RedisSentinelGroup, RedisServer

PLUGIN = "home_services"
CUSTOMERS_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
SELECT 'acme', i, 'Ada', 'Lovelace', 'ada@example.com', '555-0100', 'residential', 'active',
       'current', -97.7, 30.2
  FROM generate_series(1, $1::int) AS i
"""
WORK_ORDER_SQL = """
INSERT INTO hs.work_orders (tenant_id, id, customer_id, status, priority, service_type,
                            description, scheduled_at, longitude, latitude)
VALUES ('acme', 100, 1, 'scheduled', 'high', 'hvac', 'r0', now(), -97.7, 30.2)
"""
CLI = str(Path(sys.executable).with_name("thorbis-cache"))


@attrs.frozen
class Hs:
    dsn: str
    redis_url: str
    conn: asyncpg.Connection
    app: CacheApp

    def worker(self, **options: object) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn, **options)

    async def pending(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM thorbis.outbox"))

    async def dead_letters(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM thorbis.outbox_dead_letters"))


async def db_init(dsn: str, app: CacheApp) -> None:
    """What ``thorbis-cache db init`` does: core schema, plugin SQL, capture triggers."""
    await migrate(dsn)
    await apply_and_check(dsn, list(app.plugins.plugins.values()))
    conn = await asyncpg.connect(dsn)
    try:
        await install_triggers(conn, app.plugins.all_rules())
    finally:
        await conn.close()


async def open_hs(dsn: str, redis_url: str, customers: int) -> Hs:
    app = await CacheApp(redis_url, keyring=KeyRing.generate()).start([PLUGIN])
    await db_init(dsn, app)
    conn = await asyncpg.connect(dsn)
    await conn.execute(CUSTOMERS_SQL, customers)
    await conn.execute("DELETE FROM thorbis.outbox")  # the inserts are not under test
    return Hs(dsn, redis_url, conn, app)


@pytest.fixture
async def hs(thorbis_pg_dsn: str, thorbis_redis_url: str) -> AsyncIterator[Hs]:
    env = await open_hs(thorbis_pg_dsn, thorbis_redis_url, 3)
    try:
        yield env
    finally:
        await env.conn.close()
        await env.app.aclose()


@pytest.fixture
async def hs_standalone(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
                        ) -> AsyncIterator[Hs]:
    env = await open_hs(thorbis_pg_dsn, thorbis_standalone_redis_url, 200)
    try:
        yield env
    finally:
        await env.conn.close()
        await env.app.aclose()


async def fill_customers(hs: Hs, ids: range) -> None:
    rows = await loaders.customers(hs.conn.fetch, "acme", ids)
    for row in rows:
        await hs.app.cache.hash(CUSTOMER.key("acme", customer_id=row.id)).replace(row)


async def cached_customers(hs: Hs, ids: range) -> int:
    keys = [hs.app.cache.redis_key(CUSTOMER.key("acme", customer_id=i)) for i in ids]
    return int(await hs.app.cache.store.command("EXISTS", *keys))


# --------------------------------------------------------------------------- rules


async def test_update_drops_customer_and_lists_on_significant_change_summary_on_refresh(
    hs: Hs,
) -> None:
    cache = hs.app.cache
    await hs.conn.execute("REFRESH MATERIALIZED VIEW hs.customer_summary")
    entity = cache.hash(CUSTOMER.key("acme", customer_id=1))
    summary_key = CUSTOMER_SUMMARY.key("acme", customer_id=1)
    lists = [cache.zset(CUSTOMER_LIST.key("acme", segment=s)) for s in CustomerSegment]
    neighbour = cache.hash(CUSTOMER.key("acme", customer_id=2))

    async def fill() -> None:
        await fill_customers(hs, range(1, 3))
        await cache.get_or_load(
            summary_key, lambda: loaders.customer_summary(hs.conn.fetch, "acme", 1))
        for zset in lists:
            await zset.add({1: 10.0, 2: 5.0}, replace=True)

    async def present() -> dict[str, bool]:
        return {
            "customer": await entity.get() is not None,
            "summary": await cache.get(summary_key) is not None,
            "lists": all([await z.card() == 2 for z in lists]),
            "neighbour": await neighbour.get() is not None,
        }

    await fill()
    assert set((await present()).values()) == {True}
    async with hs.worker() as worker:
        # A phone number is not significant: the customer goes, its lists and summary stay.
        await hs.conn.execute("UPDATE hs.customers SET phone = '555-0199' WHERE id = 1")
        await worker.drain()
        assert await present() == {
            "customer": False, "summary": True, "lists": True, "neighbour": True}

        # The account status is: the customer and every list go. The summary mirrors the
        # customer summary view, which has not changed yet: it stays until the refresh.
        await fill()
        await hs.conn.execute("UPDATE hs.customers SET account_status = 'vip' WHERE id = 1")
        await worker.drain()
        assert await present() == {
            "customer": False, "summary": True, "lists": False, "neighbour": True}
        view = next(v for v in hs.app.plugins.all_views() if v.name == "hs.customer_summary")
        refreshed = await refresh_and_invalidate(hs.app, hs.conn, PLUGIN, view)
        assert refreshed.ok
        assert (await present())["summary"] is False
    assert await hs.pending() == 0


# --------------------------------------------------------------------------- failures


async def test_worker_sigkilled_mid_batch_loses_nothing(hs_standalone: Hs) -> None:
    hs = hs_standalone
    n = 200
    ids = range(1, n + 1)
    await fill_customers(hs, ids)
    admin = aioredis.Redis.from_url(hs.redis_url)
    worker = await asyncio.create_subprocess_exec(
        CLI, "worker", "--dsn", hs.dsn, "--redis-url", hs.redis_url, "--plugin", PLUGIN,
        "--batch-size", "64", "--poll-interval", "0.1",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 30)
        assert b"worker running" in line
        # Its first batch records the database's timeline in Redis (database_origin):
        # from then on only the batches below write.
        origin = await origin_of(hs.conn)
        assert origin is not None
        record = origin.key(hs.app.cache.settings.prefix)

        async def recorded() -> bool:
            return bool(await admin.exists(record))

        await wait_until("the worker's first batch", recorded)
        # Redis holds every command for a while: the worker's first batch claims its rows
        # (in its open transaction) and then blocks in the invalidation.
        await admin.client_pause(20_000, all=False)  # WRITE: scripts and DEL wait
        await hs.conn.execute("UPDATE hs.customers SET phone = phone || '9'")
        # The claim deleted rows: its transaction has an xid.
        claimers = ("SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction' "
                    "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()")
        mid_batch: list[int] = []

        async def claimed() -> bool:
            mid_batch[:] = [r["pid"] for r in await hs.conn.fetch(claimers)]
            return bool(mid_batch)

        await wait_until("the worker holds a claimed batch", claimed)
        os.kill(worker.pid, signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), 10)
    finally:
        if worker.returncode is None:
            worker.kill()
            await asyncio.wait_for(worker.wait(), 10)
        await admin.client_unpause()
        await admin.aclose()

    async def backend_gone() -> bool:
        return not await hs.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", mid_batch)

    await wait_until("PostgreSQL noticed the dead worker", backend_gone)
    # Its claim rolled back: every change is back in the outbox.
    assert await hs.pending() == n
    # Whatever the dead worker's invalidation did once Redis resumed, cache every customer
    # again: now only a worker processing the returned rows can remove them.
    await fill_customers(hs, ids)
    assert await cached_customers(hs, ids) == n
    done = await asyncio.to_thread(
        subprocess.run,
        [CLI, "worker", "--once", "--dsn", hs.dsn, "--redis-url", hs.redis_url,
         "--plugin", PLUGIN, "--batch-size", "64"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{n} change(s) applied, {n} key(s) deleted" in done.stdout
    assert await hs.pending() == 0
    assert await hs.dead_letters() == 0
    assert await cached_customers(hs, ids) == 0


async def test_redis_killed_while_changes_pending_keeps_them_until_restart(
    hs_standalone: Hs, thorbis_redis_server: RedisServer
) -> None:
    await _outage_keeps_changes(hs_standalone, thorbis_redis_server.kill,
                                thorbis_redis_server.restart)


@pytest.mark.slow
async def test_a_whole_cluster_down_keeps_changes_until_it_is_back(
    thorbis_pg_dsn: str, thorbis_cluster_redis_url: str, thorbis_redis_cluster: RedisCluster
) -> None:
    """redis-py's RedisClusterException is no RedisError: it used to reach the worker as
    a row's failure, dead-lettering committed changes while the cluster was down."""
    hs = await open_hs(thorbis_pg_dsn, thorbis_cluster_redis_url, 20)
    cluster = thorbis_redis_cluster

    def kill_all() -> None:
        for index in range(len(cluster.nodes)):
            cluster.kill(index)

    try:
        await _outage_keeps_changes(hs, kill_all, cluster.repair)
    finally:
        cluster.repair()
        await hs.conn.close()
        await hs.app.aclose()


@pytest.mark.slow
async def test_a_whole_sentinel_group_down_keeps_changes_until_it_is_back(
    thorbis_pg_dsn: str, thorbis_sentinel_redis_url: str,
    thorbis_redis_sentinel: RedisSentinelGroup,
) -> None:
    """Every data server of the group killed (the sentinels stay up and name a dead
    master): the same outage as a single server's, recovered by repairing the group."""
    hs = await open_hs(thorbis_pg_dsn, thorbis_sentinel_redis_url, 20)
    group = thorbis_redis_sentinel

    def kill_all() -> None:
        for server in group.servers:
            server.kill()

    try:
        await _outage_keeps_changes(hs, kill_all, group.repair)
    finally:
        group.repair()
        await hs.conn.close()
        await hs.app.aclose()


async def _outage_keeps_changes(hs: Hs, kill: Callable[[], object],
                                restart: Callable[[], object]) -> None:
    n = 20
    ids = range(1, n + 1)
    await fill_customers(hs, ids)
    # Two attempts would dead-letter a row if the outage were blamed on it.
    worker = hs.worker(poll_interval=0.05, max_attempts=2)
    task = asyncio.create_task(worker.run(), name="proof-worker")
    try:
        kill()
        # Significant columns: each change names a key and a tag.
        await hs.conn.execute(
            "UPDATE hs.customers SET account_status = 'vip' WHERE id <= $1", n)

        async def failed_thrice() -> bool:
            return worker.metrics.failed_batches >= 3

        await wait_until("three batches failed on the dead Redis", failed_thrice)
        assert await hs.pending() == n
        assert await hs.conn.fetchval("SELECT max(attempts) FROM thorbis.outbox") == 0
        assert await hs.dead_letters() == 0
        assert worker.metrics.processed == 0

        restart()

        async def drained() -> bool:
            return await hs.pending() == 0

        await wait_until("the worker applied the changes after the restart", drained, 30)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker.aclose()
    assert worker.metrics.processed == n
    assert worker.metrics.dead_lettered == 0
    assert await hs.dead_letters() == 0
    # And the loop keeps working on the restarted server.
    await fill_customers(hs, ids)
    async with hs.worker() as again:
        await hs.conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id <= $1", n)
        await again.drain()
    assert await cached_customers(hs, ids) == 0


# --------------------------------------------------------------------------- the race


ROUNDS = 50
READERS = 3  # each with its own CacheApp: as many processes, so no single-flight between them


@attrs.define
class Race:
    """One round after another: concurrent slow readers, one committed UPDATE."""

    hs: Hs
    readers: list[CacheApp]
    pool: asyncpg.Pool
    rng: random.Random = attrs.field(factory=lambda: random.Random(5))
    key = WORK_ORDER.key("acme", work_order_id=100)

    async def round(self, committed: str) -> list[str]:
        """Run one round; returns the descriptions the loaders read."""
        read: list[str] = []

        async def load(delay: float) -> WorkOrder:
            [row] = await loaders.work_orders(self.pool.fetch, "acme", [100])
            read.append(row.description)
            await asyncio.sleep(delay)  # a slow loader: the commit may land meanwhile
            return row

        async def reader(app: CacheApp) -> None:
            await asyncio.sleep(self.rng.uniform(0, 0.004))
            delay = self.rng.uniform(0, 0.008)
            await app.cache.get_or_load(self.key, lambda: load(delay))

        async def writer() -> None:
            await asyncio.sleep(self.rng.uniform(0, 0.004))
            await self.hs.conn.execute(
                "UPDATE hs.work_orders SET description = $1 WHERE id = 100", committed)

        await asyncio.gather(writer(), *(reader(app) for app in self.readers))
        return read


async def test_fill_after_invalidate_never_leaves_a_stale_value(hs: Hs) -> None:
    await hs.conn.execute(WORK_ORDER_SQL)
    await hs.conn.execute("DELETE FROM thorbis.outbox")
    readers = [await CacheApp(hs.redis_url, keyring=hs.app.keyring).start([PLUGIN])
               for _ in range(READERS)]
    caches = [app.cache for app in readers]
    pool = await asyncpg.create_pool(hs.dsn, min_size=READERS, max_size=READERS + 1)
    race = Race(hs, readers, pool)
    worker = hs.worker(poll_interval=0.05)
    task = asyncio.create_task(worker.run(), name="race-worker")

    async def drained() -> bool:
        return await hs.pending() == 0

    stale_rounds = 0
    try:
        for rnd in range(1, ROUNDS + 1):
            committed = f"r{rnd}"
            read = await race.round(committed)
            await wait_until(f"round {rnd}: the worker applied the UPDATE", drained)
            cached = await hs.app.cache.get(race.key)
            assert cached is None or cached.description == committed, (
                f"round {rnd}: Redis holds {cached.description!r}, committed {committed!r}")
            if any(text != committed for text in read):
                stale_rounds += 1
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker.aclose()
        await pool.close()
        for app in readers:
            await app.aclose()
    rejected = sum(c.metrics.value("fills_rejected", schema=WORK_ORDER.name) for c in caches)
    print(f"\n{stale_rounds}/{ROUNDS} rounds had a load of the old row in flight "
          f"across the commit; fills rejected: {rejected:g}")
    assert stale_rounds > 0, "the race was never exercised: no loader read the old row"
