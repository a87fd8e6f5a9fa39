"""The outbox worker's recovery from outages, with real servers and ``run()`` in a task.

* Redis killed while changes commit, then restarted from its AOF with every entry it
  held (stale ones included): the worker waits for it with its probe rather than a
  backoff, applies the backlog once it answers, and the stale entries go without any
  help from the test (which only polls); no attempt is counted on a row, nothing is
  dead-lettered. ``bench/ha.py`` measures how soon.
* PostgreSQL killed and restarted: the worker backs off (0.1 s doubling, capped), never
  probes Redis for it, and applies the next change once the database is back.

No wall-clock assertion: every wait is bounded by a generous timeout and fails naming
what it waited for.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator

import asyncpg
import attrs
import pytest
from core_testing import wait_until
from thorbis_home_services import loaders
from thorbis_home_services.models import Customer
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres import apply_and_check
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.testing.servers import PostgresServer, RedisServer

PLUGIN = "home_services"
TENANTS = ("acme", "globex")
CUSTOMERS_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
SELECT $1, i, 'Ada', 'Lovelace', 'ada@example.com', 'p0', 'residential', 'active',
       'current', -97.7, 30.2
  FROM generate_series(1, $2::int) AS i
"""
# A new phone (the customer's key) and a significant column (its tenant's list tag).
CHANGE_SQL = """
UPDATE hs.customers SET phone = $2, account_status = 'vip'
 WHERE tenant_id = $1 AND id <= $3
"""


@attrs.frozen
class Env:
    dsn: str
    conn: asyncpg.Connection
    app: CacheApp

    def worker(self, **options: object) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn, **options)

    async def outbox(self) -> tuple[int, int]:
        """Pending rows, and the most attempts counted on one."""
        row = await self.conn.fetchrow(
            "SELECT count(*) AS n, coalesce(max(attempts), 0) AS a FROM thorbis.outbox")
        assert row is not None
        return int(row["n"]), int(row["a"])

    async def dead_letters(self) -> int:
        return int(await self.conn.fetchval(
            "SELECT count(*) FROM thorbis.outbox_dead_letters"))

    async def cache_customers(self, tenant: str, ids: range) -> None:
        for row in await loaders.customers(self.conn.fetch, tenant, ids):
            await self.app.cache.hash(CUSTOMER.key(tenant, customer_id=row.id)).replace(row)

    async def cached(self, tenant: str, ids: range) -> int:
        names = [self.app.cache.redis_key(CUSTOMER.key(tenant, customer_id=i)) for i in ids]
        return int(await self.app.cache.store.command("EXISTS", *names))


async def open_env(dsn: str, redis_url: str, customers: int) -> Env:
    """``db init`` for home_services (core schema, plugin SQL, capture triggers), the
    customers of every tenant in :data:`TENANTS`, an empty outbox, a started app."""
    app = await CacheApp(redis_url, keyring=KeyRing.generate()).start([PLUGIN])
    await migrate(dsn)
    await apply_and_check(dsn, list(app.plugins.plugins.values()))
    conn = await asyncpg.connect(dsn)
    await install_triggers(conn, app.plugins.all_rules())
    for tenant in TENANTS:
        await conn.execute(CUSTOMERS_SQL, tenant, customers)
    await conn.execute("DELETE FROM thorbis.outbox")  # the inserts are not under test
    return Env(dsn, conn, app)


@pytest.fixture(scope="module")
def aof_redis() -> Iterator[RedisServer]:
    """A Redis of this module's own that keeps its data across ``kill()``: every write
    fsynced to the AOF before it is acknowledged, as a restarted production server
    would come back at best."""
    with RedisServer(appendonly=True, extra_args=["--appendfsync", "always"]) as server:
        yield server


@pytest.fixture
async def aof_env(thorbis_pg_dsn: str, aof_redis: RedisServer) -> AsyncIterator[Env]:
    if not aof_redis.ping():
        aof_redis.kill()
        aof_redis.restart()
    aof_redis.flushall()
    env = await open_env(thorbis_pg_dsn, aof_redis.url, 20)
    try:
        yield env
    finally:
        await env.conn.close()
        await env.app.aclose()


async def test_a_restarted_redis_loses_its_stale_entries_once_it_answers(
    aof_env: Env, aof_redis: RedisServer
) -> None:
    env, changed, kept = aof_env, range(1, 11), range(11, 21)
    for tenant in TENANTS:
        await env.cache_customers(tenant, range(1, 21))
    # A long polling interval: after the restart nothing but the probe wakes the worker.
    worker = env.worker(poll_interval=60.0)
    task = asyncio.create_task(worker.run(), name="recovery-worker")
    try:
        await asyncio.sleep(0.2)  # the loop now idles (its pause grows from 1 ms)
        aof_redis.kill()
        for tenant in TENANTS:
            await env.conn.execute(CHANGE_SQL, tenant, "p1", changed.stop - 1)

        async def waiting() -> bool:
            return worker.metrics.redis_probes >= 3

        await wait_until("the worker probes the dead Redis", waiting)
        # Redis being down is not the rows' fault: no attempt, no dead letter.
        assert await env.outbox() == (len(changed) * len(TENANTS), 0)
        assert await env.dead_letters() == 0
        assert worker.metrics.processed == 0

        await asyncio.to_thread(aof_redis.restart)

        async def stale_gone() -> bool:
            return not any([await env.cached(t, changed) for t in TENANTS])

        await wait_until("the stale entries are gone", stale_gone)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker.aclose()
    # The AOF did bring the entries back: the unchanged customers are still cached.
    for tenant in TENANTS:
        assert await env.cached(tenant, kept) == len(kept)
    assert await env.outbox() == (0, 0)
    assert await env.dead_letters() == 0
    assert worker.metrics.processed == len(changed) * len(TENANTS)
    assert worker.metrics.redis_waits == 1
    assert env.app.cache.store.breaker.state == "closed"
    # Reads now load the committed rows.
    key = CUSTOMER.key("acme", customer_id=1)

    async def load() -> Customer:
        return await loaders.customer(env.conn.fetch, "acme", 1)

    customer = await env.app.cache.hash(key).get_or_load(load)
    assert customer.phone == "p1"


async def test_stop_returns_while_the_worker_waits_for_redis(
    aof_env: Env, aof_redis: RedisServer
) -> None:
    worker = aof_env.worker(poll_interval=60.0)
    task = asyncio.create_task(worker.run(), name="recovery-worker")
    try:
        await asyncio.sleep(0.2)
        aof_redis.kill()
        await aof_env.conn.execute(CHANGE_SQL, "acme", "p1", 1)

        async def waiting() -> bool:
            return worker.metrics.redis_probes >= 1

        await wait_until("the worker probes the dead Redis", waiting)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
        await worker.aclose()
    assert await aof_env.outbox() == (1, 0)


async def test_a_postgres_outage_backs_off_and_recovers(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str,
    thorbis_postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    env = await open_env(thorbis_pg_dsn, thorbis_standalone_redis_url, 3)
    conn = env.conn
    worker = env.worker(poll_interval=0.05, max_backoff=0.4)
    task = asyncio.create_task(worker.run(), name="recovery-worker")
    # Each failure's pause: said in full once, then at debug level (FailureBackoff).
    caplog.set_level(logging.DEBUG, logger="thorbis_cache.invalidation.worker")
    try:
        await env.cache_customers("acme", range(1, 4))
        await asyncio.sleep(0.2)
        # The test server runs without fsync or synchronous commit: a checkpoint first,
        # so that the rows committed so far survive the kill.
        await env.conn.execute("CHECKPOINT")
        await asyncio.to_thread(thorbis_postgres_server.kill)

        def pauses() -> list[float]:
            return [float(m[1]) for r in caplog.records
                    if (m := re.search(r"retrying in ([0-9.]+)s", r.getMessage()))]

        async def backed_off() -> bool:
            return len(pauses()) >= 5

        await wait_until("five failed attempts on the dead database", backed_off)
        await asyncio.to_thread(thorbis_postgres_server.restart)
        conn = await asyncpg.connect(thorbis_pg_dsn)
        await conn.execute(CHANGE_SQL, "acme", "p1", 1)

        async def applied() -> bool:
            return await env.cached("acme", range(1, 2)) == 0

        await wait_until("the change committed after the restart is applied", applied)
        # The other customers did not change, and stayed cached through the outage.
        assert await env.cached("acme", range(2, 4)) == 2
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await worker.aclose()
        env.conn.terminate()  # killed with the server
        if conn is not env.conn:
            await conn.close()
        await env.app.aclose()
    # A backoff from 0.1 s, doubling up to max_backoff; Redis was never suspected.
    assert pauses()[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert worker.metrics.redis_waits == 0
    assert worker.metrics.redis_probes == 0
