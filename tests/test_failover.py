"""Failover on real Sentinel groups and replicated Clusters: nothing resurrects.

* reads and writes recover by themselves after the master is SIGKILLed, and no driver
  exception reaches the caller meanwhile (``get_or_load`` serves from its loader);
* the hard case of asynchronous replication: the replicas are frozen, an invalidation is
  acknowledged by the master alone (its WAIT times out), the master is killed and a
  replica without the delete is promoted -- the stale value *is* back (asserted, so the
  test proves something), and the worker's replay removes it once it sees the new
  master; without the replay it stays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
from test_invalidation_proof import Hs, fill_customers, open_hs
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import Cache, CacheSettings, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.testing.servers import RedisCluster, RedisSentinelGroup

pytestmark = pytest.mark.slow

NOTE: KeySchema[str] = KeySchema("ha.note", str, params={"id": int}, ttl=600)


@attrs.frozen
class Topology:
    """One replicated topology, seen through what a failover test needs."""

    url: str
    #: SIGKILL the master serving ``key``; returns a handle for wait_failover
    kill_master: Callable[[str], Any]
    wait_failover: Callable[[Any], Any]
    #: SIGSTOP the replicas of the master serving ``key``; returns them
    freeze_replicas: Callable[[str], list[Any]]
    thaw: Callable[[Any], None]
    #: SIGSTOP the master serving ``key`` (its connections stay open, silent); a handle
    #: for wait_failover and thaw
    freeze_master: Callable[[str], Any]


def _sentinel(group: RedisSentinelGroup) -> Topology:
    return Topology(
        url=group.url,
        kill_master=lambda _key: group.kill_master(),
        wait_failover=group.wait_failover,
        freeze_replicas=lambda _key: [_freeze(group, r) for r in group.replicas()],
        thaw=group.thaw,
        freeze_master=lambda _key: _freeze(group, group.master()),
    )


def _cluster(cluster: RedisCluster) -> Topology:
    def freeze(key: str) -> list[int]:
        replicas = cluster.replicas_of(cluster.master_for_key(key))
        for replica in replicas:
            cluster.freeze(replica)
        return replicas

    def freeze_master(key: str) -> int:
        master = cluster.master_for_key(key)
        cluster.freeze(master)
        return master

    return Topology(url=cluster.url, kill_master=cluster.kill_master_for_key,
                    wait_failover=cluster.wait_failover, freeze_replicas=freeze,
                    thaw=cluster.thaw, freeze_master=freeze_master)


def _freeze(group: RedisSentinelGroup, server: Any) -> Any:
    group.freeze(server)
    return server


@pytest.fixture(params=["sentinel", "cluster"])
def replicated(request: pytest.FixtureRequest) -> Topology:
    return replicated_topology(request)


def replicated_topology(request: pytest.FixtureRequest) -> Topology:
    """The session's Sentinel group or Cluster (``request.param``), flushed."""
    if request.param == "sentinel":
        group: RedisSentinelGroup = request.getfixturevalue("thorbis_redis_sentinel")
        group.flushall()
        return _sentinel(group)
    cluster: RedisCluster = request.getfixturevalue("thorbis_redis_cluster")
    cluster.flushall()
    return _cluster(cluster)


async def test_reads_and_writes_come_back_by_themselves_after_the_master_dies(
    replicated: Topology,
) -> None:
    registry = SchemaRegistry()
    registry.register(NOTE, owner="tests")
    key = NOTE.key("acme", id=1)
    async with Cache.from_url(replicated.url, registry) as cache:
        await cache.set(key, "before")
        loads = 0

        async def loader() -> str:
            nonlocal loads
            loads += 1
            return "from the database"

        killed = replicated.kill_master(cache.redis_key(key))
        unavailable = 0
        deadline = time.monotonic() + 30
        while True:
            # Never a driver exception: the degraded path answers reads throughout.
            assert await cache.get_or_load(key, loader) in ("before", "from the database")
            try:
                await cache.set(key, "after")
                break
            except RedisUnavailableError:
                unavailable += 1
            assert time.monotonic() < deadline, "writes did not come back within 30 s"
            await asyncio.sleep(0.02)
        replicated.wait_failover(killed)
        assert await cache.get(key) == "after"
        assert unavailable > 0, "the write never failed: the master was not the one killed"


@pytest.fixture
async def hs_replicated(thorbis_pg_dsn: str, replicated: Topology) -> AsyncIterator[Hs]:
    env = await open_hs(thorbis_pg_dsn, replicated.url, 3)
    try:
        yield env
    finally:
        await env.conn.close()
        await env.app.aclose()


@pytest.mark.parametrize("replay", [True, False], ids=["replay", "no-replay"])
async def test_an_invalidation_lost_by_a_failover_is_applied_again(
    hs_replicated: Hs, replicated: Topology, replay: bool
) -> None:
    hs = hs_replicated
    cache = hs.app.cache
    worker = hs.worker(replay_window=300.0 if replay else None)
    await worker.drain()  # the first look at the masters
    await fill_customers(hs, range(1, 2))
    key = cache.redis_key(CUSTOMER.key("acme", customer_id=1))
    # Let the replicas receive the fill, then make them miss what follows.
    await _replicated(cache)
    frozen = replicated.freeze_replicas(key)
    try:
        await hs.conn.execute("UPDATE hs.customers SET account_status = 'vip' WHERE id = 1")
        applied = await worker.drain()
        assert sum(len(r.processed) for r in applied) == 1
        assert await cache.store.command("EXISTS", key) == 0  # acknowledged by the master
        killed = replicated.kill_master(key)
    finally:
        for replica in frozen:
            replicated.thaw(replica)
    replicated.wait_failover(killed)

    async def exists() -> int:
        while True:
            try:
                return int(await cache.store.command("EXISTS", key))
            except RedisUnavailableError:
                await asyncio.sleep(0.05)

    # The promoted replica never received the delete: the stale hash is back.
    assert await exists() == 1
    await _drain_until_redis_answers(worker)
    if replay:
        assert await exists() == 0, "the replay did not delete the resurrected entry"
        assert worker.replay is not None
        assert worker.replay.replays == 1
    else:
        assert await exists() == 1  # what the replay is for


async def _replicated(cache: Cache) -> None:
    """Wait until every replica of the tenant's master has what it executed so far (a
    replica just resynced after the previous test may take more than one WAIT)."""
    deadline = time.monotonic() + 10
    while True:
        acked, wanted = await cache.store.sync_replicas(cache.sync_key("acme"))
        if wanted and acked == wanted:
            return
        assert time.monotonic() < deadline, f"{acked} of {wanted} replicas acknowledged"
        await asyncio.sleep(0.05)


async def _drain_until_redis_answers(worker: Any) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            await worker.drain()
            return
        except RedisUnavailableError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_a_lease_from_the_dead_master_lands_no_stale_fill_on_the_new_one(
    replicated: Topology,
) -> None:
    """The lease is granted and replicated; an invalidation revokes it on the master
    alone; the master dies and a replica that still holds the lease is promoted. The
    filler, whose load started before the invalidation, must not write there: the lease
    names the old master's replication ID (``lua/_lease_owner.lua``)."""
    registry = SchemaRegistry()
    registry.register(NOTE, owner="tests")
    key = NOTE.key("acme", id=7)
    # A lease long enough to outlive the failover (5 s by default).
    settings = CacheSettings(lease_ttl=60)
    async with Cache.from_url(replicated.url, registry, settings=settings) as filler, \
            Cache.from_url(replicated.url, registry) as invalidator:
        loading, finish = asyncio.Event(), asyncio.Event()

        async def slow_loader() -> str:
            loading.set()
            await finish.wait()
            return "read before the invalidation"

        fill = asyncio.create_task(filler.get_or_load(key, slow_loader))
        await loading.wait()
        await _replicated(invalidator)  # the lease is on the replicas
        rk = invalidator.redis_key(key)
        frozen = replicated.freeze_replicas(rk)
        try:
            await invalidator.delete(key)  # acknowledged by the master alone
            killed = replicated.kill_master(rk)
        finally:
            for replica in frozen:
                replicated.thaw(replica)
        replicated.wait_failover(killed)
        other = NOTE.key("acme", id=8)
        deadline = time.monotonic() + 20
        while True:  # the filler's process goes on serving reads meanwhile
            try:
                await filler.get(other)
                break
            except RedisUnavailableError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert await invalidator.store.command("EXISTS", filler.lease_key(key)) == 1
        finish.set()
        assert await fill == "read before the invalidation"
        assert await invalidator.store.get(rk) is None
