"""The rules end to end with the outbox worker, real PostgreSQL and Redis: a stock
movement drops the part's hash and the stock sets, a completed repair order drops the
vehicle's history; and the demo's change is verified after the worker ran -- and
reported stale when it did not run."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import asyncpg
import attrs
import pytest
from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.worker import OutboxWorker

from thorbis_automotive import loaders, writers
from thorbis_automotive.demo import DEMO
from thorbis_automotive.schemas import (
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    vehicle_history_key,
)


@attrs.frozen
class Auto:
    dsn: str
    conn: asyncpg.Connection
    app: CacheApp

    def worker(self) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn)


@pytest.fixture
async def auto(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[Auto]:
    # What `db init` does: core schema, the plugin's SQL and views, capture triggers.
    await migrate(thorbis_pg_dsn)
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(),
                         postgres_dsn=thorbis_pg_dsn).start(["automotive"], apply_sql=True)
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await install_triggers(conn, app.plugins.all_rules())
        await DEMO.populate(conn, ["acme", "globex"], seed=5, scale=1)
        async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
            await worker.drain()  # the load itself, so each test starts from an empty outbox
        yield Auto(thorbis_pg_dsn, conn, app)
    finally:
        await conn.close()
        await app.aclose()


async def test_a_stock_movement_drops_the_part_and_the_stock_sets(auto: Auto) -> None:
    cache = auto.app.cache
    for tenant in ("acme", "globex"):
        await writers.store_parts(cache, tenant, await loaders.all_parts(auto.conn.fetch, tenant))
    number = await auto.conn.fetchval(
        "SELECT part_number FROM auto.parts WHERE tenant_id = 'acme' ORDER BY part_number")
    entity = cache.hash(PART.key("acme", part_number=number))
    before = await entity.get()
    assert before is not None
    await auto.conn.execute(
        "INSERT INTO auto.stock_movements (tenant_id, id, part_number, quantity, reason) "
        "VALUES ('acme', 9000001, $1, 12, 'receipt')", number)
    async with auto.worker() as worker:
        results = await worker.drain()
    keys = {k for r in results for k in r.keys}
    assert {cache.redis_key(PART.key("acme", part_number=number)).split(":", 1)[1],
            "{acme}:auto.parts_by_stock", "{acme}:auto.parts_reorder_margin"} <= keys
    assert await entity.get() is None
    assert await cache.zset(PARTS_BY_STOCK.key("acme")).card() == 0
    assert await cache.zset(PARTS_REORDER_MARGIN.key("acme")).card() == 0
    # The other tenant's stock is untouched.
    assert await cache.zset(PARTS_BY_STOCK.key("globex")).card() > 0
    # The reload shows the movement.
    after = await loaders.part(auto.conn.fetch, "acme", number)
    assert after.on_hand == before.on_hand + 12


async def test_a_completed_repair_order_drops_the_history(auto: Auto) -> None:
    cache = auto.app.cache
    row = await auto.conn.fetchrow(
        "SELECT id, vin FROM auto.repair_orders WHERE tenant_id = 'acme' "
        "AND status IN ('open', 'in_progress') ORDER BY id LIMIT 1")
    key = vehicle_history_key("acme", row["vin"])
    history = await loaders.vehicle_history(auto.conn.fetch, "acme", row["vin"])
    await cache.set(key, history)
    # An edit that is not significant (the bay) keeps the history.
    await auto.conn.execute("UPDATE auto.repair_orders SET bay_id = 1 WHERE tenant_id = 'acme' "
                            "AND id = $1", row["id"])
    async with auto.worker() as worker:
        await worker.drain()
        assert await cache.get(key) == history
        await auto.conn.execute(
            "UPDATE auto.repair_orders SET status = 'completed', completed_at = now(), "
            "labor_hours = 1.5 WHERE tenant_id = 'acme' AND id = $1", row["id"])
        results = await worker.drain()
    assert [k for r in results for k in r.keys] == [cache.redis_key(key).split(":", 1)[1]]
    assert await cache.get(key) is None
    fresh = await loaders.vehicle_history(auto.conn.fetch, "acme", row["vin"])
    assert len(fresh.services) == len(history.services) + 1


async def test_demo_read_and_change_follow_the_database(auto: Auto) -> None:
    rng = random.Random(1)
    names = {await DEMO.read(auto.app, auto.conn, "acme", rng) for _ in range(30)}
    assert names == {"auto.vehicle_history", "auto.labor_estimate", "auto.part_demand"}
    change = await DEMO.change(auto.app, auto.conn, "acme", rng)
    assert "completed" in change.description
    async with auto.worker() as worker:
        assert await worker.drain()
    assert await change.verify() is None


async def test_demo_verify_reports_a_stale_cache_without_the_worker(auto: Auto) -> None:
    change = await DEMO.change(auto.app, auto.conn, "globex", random.Random(2))
    problem = await change.verify()
    assert problem is not None
    assert "the cache has" in problem
    assert "globex" in problem
