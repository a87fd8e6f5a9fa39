"""A server that stops answering without closing its connections: a hung or stopped
process, a host gone behind a partition, a middlebox that dropped the flow. The kernel
does not report such a connection lost for many minutes (TCP retransmissions), so the
store gives it up itself once it has owed replies for a call's timeout without sending
a byte; otherwise every call routed there kept timing out long after Sentinel or the
Cluster had promoted a replica (both topologies failed the first test below for 20 s,
until the frozen master was thawed). A server that is only slow is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from test_failover import Topology, replicated_topology
from test_invalidation_proof import fill_customers, open_hs
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisServer
from thorbis_cache.transport import Router, pack_command

NOTE: KeySchema[str] = KeySchema("silent.note", str, params={"id": int}, ttl=600)


@pytest.fixture(params=["sentinel", "cluster"])
def replicated(request: pytest.FixtureRequest) -> Topology:
    return replicated_topology(request)


@pytest.mark.slow
async def test_a_silent_master_is_given_up_once_a_replica_is_promoted(
        replicated: Topology) -> None:
    registry = SchemaRegistry()
    registry.register(NOTE, owner="tests")
    key = NOTE.key("acme", id=1)
    async with Cache.from_url(replicated.url, registry) as cache:
        await cache.set(key, "before")
        assert await cache.get(key) == "before"
        frozen = replicated.freeze_master(cache.redis_key(key))
        # Calls while the master is silent: bounded by the store's deadline, as ever.
        with pytest.raises(RedisUnavailableError):
            await cache.set(key, "while silent")
        replicated.wait_failover(frozen)
        # The old master is still frozen, its connections open: the cache must reach
        # the promoted replica by itself, in seconds, not when the kernel gives up.
        deadline = time.monotonic() + 20
        failures: list[str] = []
        while True:
            try:
                await cache.set(key, "after")
                break
            except RedisUnavailableError as exc:
                failures.append(str(exc))
            assert time.monotonic() < deadline, (
                f"writes still failed 20 s after the failover ({len(failures)} tries); "
                f"last: {failures[-1]}")
            await asyncio.sleep(0.05)
        assert await cache.get(key) == "after"
        assert cache.store.silent_servers >= 1


@pytest.mark.slow
async def test_the_worker_applies_a_change_once_a_silent_master_is_replaced(
        replicated: Topology, thorbis_pg_dsn: str) -> None:
    """The worker's batch meets the frozen master (its UNLINK, its WAIT), is rolled
    back, and is applied on the promoted replica, which still holds the entry."""
    hs = await open_hs(thorbis_pg_dsn, replicated.url, 1)
    try:
        cache = hs.app.cache
        worker = hs.worker()
        await worker.drain()
        await fill_customers(hs, range(1, 2))
        key = cache.redis_key(CUSTOMER.key("acme", customer_id=1))
        await cache.store.sync_replicas(cache.sync_key("acme"))
        frozen = replicated.freeze_master(key)
        await hs.conn.execute("UPDATE hs.customers SET account_status = 'vip' WHERE id = 1")
        replicated.wait_failover(frozen)
        deadline = time.monotonic() + 20
        while True:
            try:
                applied = await worker.drain()
                if sum(len(r.processed) for r in applied):
                    break
            except RedisUnavailableError:
                pass
            assert time.monotonic() < deadline, "the change was not applied within 20 s"
            await asyncio.sleep(0.05)
        assert await cache.store.command("EXISTS", key) == 0
        assert await hs.pending() == 0
    finally:
        await hs.conn.close()
        await hs.app.aclose()


@contextlib.contextmanager
def paused(server: RedisServer, ms: int) -> Iterator[None]:
    """``CLIENT PAUSE ms ALL``: the server reads, answers nothing, keeps connections."""
    admin = redis.Redis(port=server.port)
    admin.execute_command("CLIENT", "PAUSE", ms, "ALL")
    try:
        yield
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()


async def test_a_server_silent_past_a_call_timeout_is_given_up_then_reached_again(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    async with RedisStore.from_url(thorbis_redis_server.url, timeout=0.4) as store:
        await store.set("tc:{t}:k", b"v", 60_000)
        with paused(thorbis_redis_server, 5000):
            with pytest.raises(RedisUnavailableError, match="no reply within"):
                await store.get("tc:{t}:k")
            # 0.4 s timeout + one 0.1 s tick of silence, sampled at 0.1 s ticks
            deadline = time.monotonic() + 3
            while store.silent_servers == 0:
                assert time.monotonic() < deadline, "the silent server was never given up"
                await asyncio.sleep(0.05)
        assert await store.get("tc:{t}:k") == b"v"


async def test_a_server_slower_than_a_call_timeout_allows_is_kept(
        thorbis_redis_server: RedisServer) -> None:
    thorbis_redis_server.flushall()
    async with RedisStore.from_url(thorbis_redis_server.url, timeout=2.0) as store:
        await store.set("tc:{t}:k", b"v", 60_000)
        with paused(thorbis_redis_server, 1200):
            values = await asyncio.gather(*(store.get("tc:{t}:k") for _ in range(20)))
        assert values == [b"v"] * 20
        assert store.silent_servers == 0
        assert store.handovers == {"redirect": 0, "connection": 0}


async def test_silence_is_counted_from_ticks_that_follow_each_other(
        thorbis_redis_server: RedisServer) -> None:
    """Router.sweep on its own, with the clock given: a server is given up after
    ``silence`` seconds of replies owed and nothing read, counted over ticks no further
    apart than half of it; a gap between ticks (a loop that was blocked) starts the
    count again instead of being taken for silence."""
    thorbis_redis_server.flushall()
    client = aioredis.Redis(port=thorbis_redis_server.port)
    router = Router(client)
    try:
        node = await router.resolve("k")
        connection = await node.connection()
        assert await connection.request(pack_command("PING")) == b"PONG"
        with paused(thorbis_redis_server, 5000):
            owed = connection.request(pack_command("GET", "k"))
            t0 = 1000.0
            for step in range(4):  # 0 to 0.9 s of silence: kept
                router.sweep(t0 + 0.3 * step, 1.0)
            assert connection.usable
            assert router.silent_found == 0
            router.sweep(t0 + 5.0, 1.0)  # a gap of 4.1 s: counted again from here
            router.sweep(t0 + 5.3, 1.0)
            assert connection.usable
            assert router.silent_found == 0
            router.sweep(t0 + 5.6, 1.0)
            router.sweep(t0 + 6.0, 1.0)  # 1.0 s of silence since the gap
            assert router.silent_found == 1
            assert not connection.usable
            with pytest.raises(redis.exceptions.ConnectionError):
                await owed
    finally:
        await router.aclose()
        await client.aclose()
