"""A Redis that answers but refuses writes: ``MISCONF`` (its snapshots fail while
``stop-writes-on-bgsave-error`` is on, as ``deploy/redis/redis.conf`` sets: a full disk)
or ``READONLY`` (the address now serves a replica). Like a Redis out of memory, it is
unavailable *for writes*: a read-through answers from its loader, and the worker keeps
its changes until writes are accepted again, counting nothing against them.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import attrs
import pytest
from core_testing import CUSTOMER_SQL, run_cli, stale_customer, wait_until
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import Cache, CacheApp, KeyRing, KeySchema, SchemaKind, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError, RedisWritesRefusedError
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.testing.servers import RedisServer

SNAPSHOT = "snapshot.rdb"


@attrs.frozen
class Person:
    id: int
    name: str


LABEL = KeySchema("wr.label", str, params={"id": int}, ttl=300)
PERSON = KeySchema("wr.person", Person, params={"id": int}, ttl=300, kind=SchemaKind.HASH)
RANKING = KeySchema("wr.ranking", int, params={"id": int}, ttl=300, kind=SchemaKind.ZSET)


class Snapshots:
    """Makes a server's RDB snapshots fail, and succeed again: a non-empty directory
    where the snapshot is renamed to (as a full disk would, without filling one)."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.blocker = Path(str(server.command("CONFIG", "GET", "dir")[1], "utf-8")) / SNAPSHOT

    def _bgsave(self, status: str) -> None:
        self.server.command("BGSAVE")
        for _ in range(200):
            info = self.server.command("INFO", "persistence").decode()
            if (f"rdb_last_bgsave_status:{status}" in info
                    and "rdb_bgsave_in_progress:0" in info):
                return
            time.sleep(0.05)
        raise AssertionError(f"the snapshot did not end {status}")

    def fail(self) -> None:
        """Writes refused with MISCONF from now on."""
        (self.blocker / "keep").mkdir(parents=True)
        self._bgsave("err")

    def succeed(self) -> None:
        """Writes accepted again."""
        shutil.rmtree(self.blocker)
        self._bgsave("ok")


@pytest.fixture
def snapshots() -> Iterator[Snapshots]:
    server = RedisServer(extra_args=["--dbfilename", SNAPSHOT, "--save", "3600 1",
                                     "--stop-writes-on-bgsave-error", "yes"]).start()
    try:
        yield Snapshots(server)
    finally:
        server.stop()


@pytest.fixture
def replica() -> Iterator[tuple[RedisServer, Callable[[], None]]]:
    """A server that serves as a replica of another, and a function that promotes it."""
    master, server = RedisServer().start(), RedisServer().start()
    try:
        server.command("REPLICAOF", "127.0.0.1", master.port)
        yield server, lambda: server.command("REPLICAOF", "NO", "ONE")
    finally:
        server.stop()
        master.stop()


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (LABEL, PERSON, RANKING):
        reg.register(schema, owner="tests")
    return reg


async def _reads_answer_from_loaders(cache: Cache, refusal: str) -> None:
    """Every kind of read-through answers from its loader, uncached and counted, and a
    write says that writes are refused, naming the server and its reply."""
    for i in (1, 2):  # twice: nothing was cached the first time
        assert await cache.get_or_load(LABEL.key("acme", id=1),
                                       lambda: asyncio.sleep(0, result="loaded")) == "loaded"
        assert await cache.hash(PERSON.key("acme", id=1)).get_or_load(
            lambda: asyncio.sleep(0, result=Person(1, "Ann"))) == Person(1, "Ann")
        assert await cache.zset(RANKING.key("acme", id=1)).top(
            3, loader=lambda: asyncio.sleep(0, result={7: 1.0})) == [(7, 1.0)]
        assert sum(cache.metrics.for_schema(s.name).degraded_loads
                   for s in (LABEL, PERSON, RANKING)) == 3 * i
    with pytest.raises(RedisWritesRefusedError, match=refusal) as refused:
        await cache.set(LABEL.key("acme", id=2), "written")
    assert isinstance(refused.value, RedisUnavailableError)
    assert cache.store.address in str(refused.value)
    assert cache.store.breaker.state == "closed"  # the server answers: reads go on


async def test_reads_answer_from_loaders_while_snapshots_fail(snapshots: Snapshots) -> None:
    async with Cache.from_url(snapshots.server.url, registry()) as cache:
        await cache.set(LABEL.key("acme", id=3), "kept")
        snapshots.fail()
        await _reads_answer_from_loaders(cache, "MISCONF")
        assert await cache.get(LABEL.key("acme", id=3)) == "kept"  # reads are served
        snapshots.succeed()
        await cache.get_or_load(LABEL.key("acme", id=1), lambda: asyncio.sleep(0, result="x"))
        assert await cache.get(LABEL.key("acme", id=1)) == "x"  # cached again


async def test_reads_answer_from_loaders_on_a_replica(
    replica: tuple[RedisServer, Callable[[], None]]
) -> None:
    server, promote = replica
    async with Cache.from_url(server.url, registry()) as cache:
        await _reads_answer_from_loaders(cache, "read only replica")
        promote()
        await cache.get_or_load(LABEL.key("acme", id=1), lambda: asyncio.sleep(0, result="x"))
        assert await cache.get(LABEL.key("acme", id=1)) == "x"


@pytest.fixture
async def hs_app(snapshots: Snapshots, thorbis_pg_dsn: str) -> AsyncIterator[CacheApp]:
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn, "--plugin",
                            "home_services", "--capture", "triggers")
    app = await CacheApp(snapshots.server.url, keyring=KeyRing.generate()).start(
        ["home_services"])
    try:
        yield app
    finally:
        await app.aclose()


async def test_the_worker_keeps_its_changes_while_snapshots_fail(
    snapshots: Snapshots, hs_app: CacheApp, thorbis_pg_dsn: str
) -> None:
    """Deletes are writes too: while they are refused the changes wait in the outbox,
    no attempt counted against them (a disk full for longer than ``max_attempts``
    batches must not dead-letter every change), and are applied once it is mended."""
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 2)
        async with OutboxWorker.from_app(hs_app, thorbis_pg_dsn, max_attempts=2) as worker:
            await worker.drain()
            keys = [CUSTOMER.key("acme", customer_id=i) for i in (1, 2)]
            for key in keys:
                await hs_app.cache.hash(key).replace(stale_customer(key.params["customer_id"]))
            snapshots.fail()
            await conn.execute("UPDATE hs.customers SET phone = 'new' WHERE id = 1")
            task = asyncio.create_task(worker.run())
            try:
                await wait_until("the worker waits for Redis",
                                 lambda: asyncio.sleep(0, worker.metrics.redis_waits > 0))
                await asyncio.sleep(1.5)  # several batches' worth of tries
                rows = await conn.fetch("SELECT attempts FROM thorbis.outbox")
                assert [r["attempts"] for r in rows] == [0]
                assert await conn.fetchval(
                    "SELECT count(*) FROM thorbis.outbox_dead_letters") == 0
                assert await hs_app.cache.hash(keys[0]).get() is not None  # still stale
                snapshots.succeed()
                await wait_until("the change applied", lambda: _gone(hs_app, keys[0]))
            finally:
                worker.stop()
                await task
            assert await hs_app.cache.hash(keys[1]).get() is not None
    finally:
        await conn.close()


async def _gone(app: CacheApp, key: object) -> bool:
    return await app.cache.hash(key).get() is None  # type: ignore[arg-type]
