"""The rules end to end with the outbox worker, real PostgreSQL and Redis: a stock
movement drops the part's hash and the stock sets, a completed repair order drops the
vehicle's history, the INSERT of a vehicle, part or service type drops its cached
absence; the demo's reads hit when replayed, and its changes are verified after the
worker ran -- and reported stale when it did not run."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import attrs
import pytest
from thorbis_cache import Cache, CacheApp, KeyRing, MissingRow
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers

from thorbis_automotive import loaders, writers
from thorbis_automotive.demo import DEMO
from thorbis_automotive.schemas import (
    ALL_SCHEMAS,
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    SERVICE_TYPE,
    vehicle_history_key,
)


@attrs.frozen
class Auto:
    dsn: str
    conn: asyncpg.Connection
    #: what the demo reads with (its reads load concurrently, as a host's do)
    pool: asyncpg.Pool
    app: CacheApp

    def worker(self) -> OutboxWorker:
        return OutboxWorker.from_app(self.app, self.dsn)


@pytest.fixture
async def auto(thorbis_pg_dsn: str, thorbis_standalone_redis_url: str) -> AsyncIterator[Auto]:
    # What `db init` does: core schema, the plugin's SQL and views, capture triggers.
    await migrate(thorbis_pg_dsn)
    app = await CacheApp(thorbis_standalone_redis_url, keyring=KeyRing.generate(),
                         postgres_dsn=thorbis_pg_dsn).start(["automotive"], apply_sql=True,
                                                            capture="triggers")
    conn = await asyncpg.connect(thorbis_pg_dsn)
    pool = await asyncpg.create_pool(thorbis_pg_dsn, min_size=1, max_size=4)
    try:
        await install_triggers(conn, app.plugins.all_rules())
        await DEMO.populate(conn, ["acme", "globex"], seed=5, scale=1)
        async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
            await worker.drain()  # the load itself, so each test starts from an empty outbox
        yield Auto(thorbis_pg_dsn, conn, pool, app)
    finally:
        await pool.close()
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


@attrs.frozen
class AbsentCase:
    """An entity read through before its row exists, and the INSERT that creates it."""

    name: str
    key: CacheKey[Any]
    read: Callable[[Cache, Callable[[], Awaitable[Any]]], Awaitable[Any]]
    load: Callable[[Any], Awaitable[Any]]
    insert: str


_NEW_VIN = "1M8GDM9AXKP042788"
ABSENT_CASES = [
    AbsentCase(
        "vehicle history", vehicle_history_key("acme", _NEW_VIN),
        lambda cache, load: cache.get_or_load(vehicle_history_key("acme", _NEW_VIN), load),
        lambda fetch: loaders.vehicle_history(fetch, "acme", _NEW_VIN),
        "INSERT INTO auto.vehicles (tenant_id, vin, make, model, model_year) "
        "VALUES ('acme', '1M8GDM9AXKP042788', 'Ford', 'Focus', 2019)",
    ),
    AbsentCase(
        "part", PART.key("acme", part_number="NEW-00001"),
        lambda cache, load: cache.hash(PART.key("acme", part_number="NEW-00001"))
        .get_or_load(load),
        lambda fetch: loaders.part(fetch, "acme", "NEW-00001"),
        "INSERT INTO auto.parts (tenant_id, part_number, description, category, unit_cost, "
        "unit_price) VALUES ('acme', 'NEW-00001', 'wiper blade', 'wipers', 4.10, 5.74)",
    ),
    AbsentCase(
        "service type", SERVICE_TYPE.key("acme", code="wipers"),
        lambda cache, load: cache.get_or_load(SERVICE_TYPE.key("acme", code="wipers"), load),
        lambda fetch: loaders.service_type(fetch, "acme", "wipers"),
        "INSERT INTO auto.service_types (tenant_id, code, name, interval_miles, "
        "interval_days, standard_hours, labor_rate) "
        "VALUES ('acme', 'wipers', 'Wiper blades', 15000, 365, 0.25, 120)",
    ),
]


def test_every_negative_ttl_has_an_insert_rule() -> None:
    from thorbis_cache.plugins.declarations import Operation

    from thorbis_automotive.rules import ALL_RULES

    negative = [s for s in ALL_SCHEMAS if s.negative_ttl is not None]
    assert {s.name for s in negative} == {c.key.schema.name for c in ABSENT_CASES}
    for schema in negative:
        assert any(
            Operation.INSERT in rule.operations and (
                target.schema == schema.name or target.tag in schema.tags)
            for rule in ALL_RULES for target in rule.targets
        ), schema.name


@pytest.mark.parametrize("case", ABSENT_CASES, ids=lambda c: c.name)
async def test_the_insert_rule_drops_a_cached_absence(auto: Auto, case: AbsentCase) -> None:
    cache = auto.app.cache
    calls = 0

    async def load() -> Any:
        nonlocal calls
        calls += 1
        return await case.load(auto.conn.fetch)

    for _ in range(2):
        with pytest.raises(MissingRow):
            await case.read(cache, load)
    assert calls == 1  # the second read answered from the cached absence
    await auto.conn.execute(case.insert)
    # Until the worker applies the INSERT, the absence stands (negative_ttl is 60 s).
    with pytest.raises(MissingRow):
        await case.read(cache, load)
    assert calls == 1
    async with auto.worker() as worker:
        results = await worker.drain()
    assert cache.redis_key(case.key).split(":", 1)[1] in {k for r in results for k in r.keys}
    found = await case.read(cache, load)
    assert calls == 2
    assert found == await case.load(auto.conn.fetch)


async def test_demo_reads_hit_when_replayed(auto: Auto) -> None:
    cache = auto.app.cache
    schemas = [s.name for s in ALL_SCHEMAS]

    def lookups() -> tuple[int, int]:
        counters = [cache.metrics.for_schema(name) for name in schemas]
        return sum(c.hits for c in counters), sum(c.misses for c in counters)

    async def reads() -> set[str]:
        rng = random.Random(3)
        return {await DEMO.read(auto.app, auto.pool, t, rng)
                for t in ("acme", "globex") for _ in range(40)}

    names = await reads()
    assert names == {"auto.vehicle_history", "auto.labor_quote", "auto.part",
                     "auto.low_stock", "auto.part_demand"}
    hits, misses = lookups()
    assert misses > 0
    assert await reads() == names
    replay_hits, replay_misses = lookups()
    assert replay_misses == misses, "a replayed read missed"
    assert replay_hits > hits


async def test_demo_changes_follow_the_database(auto: Auto) -> None:
    rng = random.Random(1)
    changes = [await DEMO.change(auto.app, auto.pool, "acme", rng) for _ in range(6)]
    kinds = {"completed" in c.description for c in changes}
    assert kinds == {True, False}  # repair orders and stock receipts
    assert any("received" in c.description for c in changes)
    async with auto.worker() as worker:
        assert await worker.drain()
    assert [await c.verify() for c in changes] == [None] * len(changes)


async def test_demo_verify_reports_a_stale_cache_without_the_worker(auto: Auto) -> None:
    rng = random.Random(2)
    changes = [await DEMO.change(auto.app, auto.pool, "globex", rng) for _ in range(6)]
    assert {"completed" in c.description for c in changes} == {True, False}
    for change in changes:
        problem = await change.verify()
        assert problem is not None, change.description
        assert "the cache has" in problem
        assert "globex" in problem
