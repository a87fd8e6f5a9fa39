"""The worker on a Redis that is out of memory under ``noeviction`` (the Redis default):
writes are refused, but invalidations must still run -- deleting is how memory comes
back, and an entry left stale because Redis is full is the worst outcome of all.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import asyncpg
import pytest
from core_testing import CUSTOMER_SQL, run_cli, stale_customer
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.errors import CacheBackendError
from thorbis_cache.invalidation.database_origin import origin_of
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.testing.servers import RedisServer


@pytest.fixture
def full_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer(extra_args=["--maxmemory", "4mb", "--maxmemory-policy",
                                     "noeviction"]).start()
    try:
        yield server
    finally:
        server.stop()


async def _fill(app: CacheApp) -> None:
    """Raw strings until Redis refuses a write of even a few bytes for lack of memory."""
    size, refused = 1024, 0
    for i in range(200_000):
        try:
            await app.cache.store.command("SET", f"ballast:{i}", os.urandom(size))
        except CacheBackendError as exc:
            if "maxmemory" not in str(exc):
                raise
            size, refused = 8, refused + 1
            if refused == 3:
                return
    raise AssertionError("Redis never ran out of memory")


async def test_the_worker_invalidates_on_a_redis_out_of_memory(
    full_redis: RedisServer, thorbis_pg_dsn: str
) -> None:
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin",
                            "home_services", "--capture", "triggers")
    app = await CacheApp(full_redis.url, keyring=KeyRing.generate()).start(["home_services"])
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 3)
        async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
            await worker.drain()
        keys = [CUSTOMER.key("acme", customer_id=i) for i in (1, 2, 3)]
        for key in keys:
            await app.cache.hash(key).replace(stale_customer(key.params["customer_id"]))
        # The timeline the cache reflects is recorded again by the next worker, on a
        # full server (database_origin).
        origin = await origin_of(conn)
        assert origin is not None
        record = origin.key(app.cache.settings.prefix)
        assert await app.cache.store.command("UNLINK", record) == 1
        await _fill(app)
        # A worker that starts now (its first connection) and one already running.
        for cid in (1, 2):
            await conn.execute("UPDATE hs.customers SET phone = 'new' WHERE id = $1", cid)
            async with OutboxWorker.from_app(app, thorbis_pg_dsn) as worker:
                async with asyncio.timeout(30):
                    await worker.drain()
            assert await app.cache.hash(keys[cid - 1]).get() is None
        assert await app.cache.hash(keys[2]).get() is not None
        assert await app.cache.store.command("GET", record) == origin.record().encode()
    finally:
        await conn.close()
        await app.aclose()
