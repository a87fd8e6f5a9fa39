"""The outbox worker end to end with the home_services plugin, real PostgreSQL and Redis:
``db init`` installs the capture triggers, a committed UPDATE makes the cached customer
disappear, the seed's conditional rule names list tags only on a significant change, a
reassigned work order drops the old and the new schedule, the LISTEN path wakes the
worker well before its polling interval, and every batch is on the audit chain."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Sequence

import asyncpg
import attrs
import pytest
from core_testing import NOW, TECH_SQL, WORK_ORDER_SQL, run_cli
from thorbis_home_services.models import (
    AccountStatus,
    Customer,
    CustomerSegment,
    CustomerType,
    PaymentStatus,
)
from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_LIST,
    SCHEDULE_GEO,
    TECHNICIAN_SCHEDULE,
)

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.worker import OutboxWorker, UnconfiguredTagInvalidator
from thorbis_cache.postgres import audit
from thorbis_cache.postgres.triggers import CHANNEL

CUSTOMER_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
VALUES ($1, $2, 'Ada', 'Lovelace', 'ada@example.com', '555-0100', 'residential', 'active',
        'current', -97.7, 30.2)
"""


def customer(cid: int) -> Customer:
    return Customer(cid, "Ada", "Lovelace", "ada@example.com", "555-0100",
                    CustomerType.RESIDENTIAL, AccountStatus.ACTIVE, PaymentStatus.CURRENT,
                    None, "", "", "", -97.7, 30.2, NOW, NOW)


@attrs.frozen
class Hs:
    dsn: str
    conn: asyncpg.Connection
    app: CacheApp

    def worker(self, **options: object) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn, **options)


@pytest.fixture
async def hs(thorbis_pg_dsn: str, thorbis_redis_url: str) -> AsyncIterator[Hs]:
    # `db init` from the CLI: core schema, plugin SQL, capture triggers (its own loop,
    # so it runs on a thread).
    out = await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn,
                                  "--plugin", "home_services", "--capture", "triggers")
    assert "capture trigger on hs.customers" in out
    app = await CacheApp(thorbis_redis_url, keyring=KeyRing.generate()).start(["home_services"])
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        yield Hs(thorbis_pg_dsn, conn, app)
    finally:
        await conn.close()
        await app.aclose()


async def test_committed_update_drops_customer_and_lists_only_on_significant_change(
    hs: Hs
) -> None:
    await hs.conn.execute(CUSTOMER_SQL, "acme", 1)
    await hs.conn.execute(CUSTOMER_SQL, "globex", 1)
    entity = hs.app.cache.hash(CUSTOMER.key("acme", customer_id=1))
    other = hs.app.cache.hash(CUSTOMER.key("globex", customer_id=1))
    tags = UnconfiguredTagInvalidator()
    async with hs.worker(invalidate_tags=tags) as worker:
        inserted = await worker.run_once()
        # The INSERT drops the customer's key (a cached absence would go) and the lists;
        # the customer summary mirrors a view: only the view's refresh drops it.
        assert inserted.keys == ("{acme}:hs.customer:1", "{globex}:hs.customer:1")
        assert inserted.tags == (("acme", "hs.customer_lists"), ("globex", "hs.customer_lists"))
        await entity.replace(customer(1))
        await other.replace(customer(1))

        # An insignificant column: the customer goes, the lists stay.
        await hs.conn.execute("UPDATE hs.customers SET phone = '555-0199' "
                              "WHERE tenant_id = 'acme' AND id = 1")
        phone = await worker.run_once()
        assert phone.keys == ("{acme}:hs.customer:1",)
        assert phone.tags == ()
        assert await entity.get() is None
        assert await other.get() == customer(1)  # another tenant's customer is untouched

        # A significant column: the customer and the list tag.
        await entity.replace(customer(1))
        await hs.conn.execute("UPDATE hs.customers SET account_status = 'vip' "
                              "WHERE tenant_id = 'acme' AND id = 1")
        status = await worker.run_once()
        assert status.keys == ("{acme}:hs.customer:1",)
        assert status.tags == (("acme", "hs.customer_lists"),)
        assert await entity.get() is None
    # The default tag invalidator counted what it could not do (pending the tag engine).
    assert (tags.calls, tags.tags) == (3, 3)
    assert worker.metrics.processed == 4
    assert worker.metrics.batches == 3
    assert worker.metrics.lag_seconds >= 0
    # One audit record per tenant per batch, and the chain holds.
    assert await audit.verify(hs.conn) == audit.VerifyResult(True, 4)


async def test_a_batch_invalidates_the_tags_of_every_tenant_that_wrote(hs: Hs) -> None:
    tenants = [f"t{i:02d}" for i in range(40)]  # more than the batch's tag lanes
    lists = {t: hs.app.cache.zset(CUSTOMER_LIST.key(t, segment=CustomerSegment.ALL))
             for t in tenants}
    for tenant in tenants:
        await lists[tenant].add({1: 10.0})
        await hs.conn.execute(CUSTOMER_SQL, tenant, 1)  # an INSERT names the list tag
    async with hs.worker() as worker:
        result = await worker.run_once()
    assert result.tags == tuple((t, "hs.customer_lists") for t in tenants)
    assert [await lists[t].card() for t in tenants] == [0] * len(tenants)


async def test_a_tenant_whose_tags_fail_fails_the_batch_or_is_parked_on_a_cluster(hs: Hs) -> None:
    tenants = [f"t{i:02d}" for i in range(40)]
    for tenant in tenants:
        await hs.conn.execute(CUSTOMER_SQL, tenant, 1)
    seen: list[str] = []

    async def invalidate_tags(tenant: str, tags: Sequence[str]) -> None:
        seen.append(tenant)
        await asyncio.sleep(0.001)
        if tenant == "t07":
            raise RedisUnavailableError("EVALSHA", "127.0.0.1:1", "connection refused")

    async with hs.worker(invalidate_tags=invalidate_tags) as worker:
        if hs.app.cache.store.is_cluster:
            # One shard's tenant out of reach: the other tenants' changes are applied,
            # its own is parked until its shard answers, no attempt counted.
            result = await worker.run_once()
            assert (len(result.processed), len(result.parked)) == (len(tenants) - 1, 1)
            assert await hs.conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0
            rows = await hs.conn.fetch("SELECT tenant_id, attempts FROM thorbis.parked_changes")
            assert [(r["tenant_id"], r["attempts"]) for r in rows] == [("t07", 0)]
            tenant, error = await hs.conn.fetchrow(
                "SELECT tenant, last_error FROM thorbis.parked_tenants")
            assert (tenant, "connection refused" in error) == ("t07", True)
            return
        # The error itself, not a group: the worker tells an outage by its type.
        with pytest.raises(RedisUnavailableError):
            await worker.run_once()
        assert len(seen) < len(tenants)  # the tenants still waiting were not started
        # Rolled back: every change is still there, no attempt counted (an outage).
        rows = await hs.conn.fetch("SELECT attempts FROM thorbis.outbox")
        assert [r["attempts"] for r in rows] == [0] * len(tenants)


async def test_reassigned_work_order_drops_old_and_new_schedules(hs: Hs) -> None:
    await hs.conn.execute(CUSTOMER_SQL, "acme", 1)
    await hs.conn.execute(TECH_SQL, "acme", 10)
    await hs.conn.execute(TECH_SQL, "acme", 11)
    await hs.conn.execute(WORK_ORDER_SQL, "acme", 100, 1, None, NOW)  # unassigned
    async with hs.worker() as worker:
        created = await worker.run_once()
        day = NOW.date()
        # An unassigned order names no technician schedule (NULL parameter).
        assert SCHEDULE_GEO.key("acme", day=day).body in created.keys
        assert not [k for k in created.keys if "technician_schedule" in k]
        await hs.conn.execute("UPDATE hs.work_orders SET assigned_technician_id = 10")
        await worker.run_once()
        old = TECHNICIAN_SCHEDULE.key("acme", technician_id=10, day=day)
        new = TECHNICIAN_SCHEDULE.key("acme", technician_id=11, day=day + dt.timedelta(days=1))
        for key in (old, new):
            await hs.app.cache.zset(key).add({100: 1.0}, replace=True)
        await hs.conn.execute("UPDATE hs.work_orders SET assigned_technician_id = 11, "
                              "scheduled_at = scheduled_at + interval '1 day'")
        moved = await worker.run_once()
    assert old.body in moved.keys
    assert new.body in moved.keys
    assert await hs.app.cache.zset(old).card() == 0
    assert await hs.app.cache.zset(new).card() == 0


async def test_run_loop_finds_a_commit_by_its_short_poll(hs: Hs) -> None:
    """The triggers send no NOTIFY; an idle worker polls with a pause growing to
    ``poll_interval``, so a change is applied within about that long."""
    await hs.conn.execute(CUSTOMER_SQL, "acme", 1)
    worker = hs.worker(poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # idle long enough for the pause to reach its cap
        entity = hs.app.cache.hash(CUSTOMER.key("acme", customer_id=1))
        await entity.replace(customer(1))
        start = time.perf_counter()
        await hs.conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 1")
        while await entity.get() is not None:
            assert time.perf_counter() - start < 5, "the change was not found by polling"
            await asyncio.sleep(0.005)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
        await worker.aclose()
    assert worker.metrics.processed == 2


async def test_run_loop_is_still_woken_by_a_notify(hs: Hs) -> None:
    """A NOTIFY on the outbox channel (sent by a host or a tool) ends the pause at once,
    even with a long ``poll_interval``."""
    await hs.conn.execute(CUSTOMER_SQL, "acme", 1)
    worker = hs.worker(poll_interval=60.0)
    task = asyncio.create_task(worker.run())
    try:
        # Pauses of 1, 2, 4, ... 2048 ms end near 4.1 s; the next lasts 4.1 s more, so
        # only the NOTIFY can find the change within half a second.
        await asyncio.sleep(4.5)
        entity = hs.app.cache.hash(CUSTOMER.key("acme", customer_id=1))
        await entity.replace(customer(1))
        await hs.conn.execute("UPDATE hs.customers SET phone = 'x' WHERE id = 1")
        start = time.perf_counter()
        await hs.conn.execute(f"NOTIFY {CHANNEL}")
        while await entity.get() is not None:
            assert time.perf_counter() - start < 0.5, "not woken by the NOTIFY"
            await asyncio.sleep(0.005)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 5)
        await worker.aclose()


def test_cli_worker_once_drains_changes_made_while_no_worker_ran(
    thorbis_pg_dsn: str, thorbis_standalone_redis_url: str
) -> None:
    run_cli("db", "init", "--dsn", thorbis_pg_dsn, "--plugin", "home_services")

    async def write() -> None:
        conn = await asyncpg.connect(thorbis_pg_dsn)
        try:
            await conn.execute(CUSTOMER_SQL, "acme", 1)
            await conn.execute("UPDATE hs.customers SET account_status = 'vip'")
        finally:
            await conn.close()

    asyncio.run(write())
    out = run_cli("worker", "--once", "--dsn", thorbis_pg_dsn, "--redis-url",
               thorbis_standalone_redis_url, "--plugin", "home_services")
    assert "1 batch(es): 2 change(s) applied, 1 key(s) deleted, 1 tag(s), 0 dead-lettered" in out
