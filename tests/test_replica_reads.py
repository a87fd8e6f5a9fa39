"""Replica reads (``KeySchema(read_from_replicas=True)``) on a real Sentinel group and a
replicated Cluster: served by replicas that keep up, never by one past the lag bound."""

from __future__ import annotations

import asyncio
import time

import pytest

from thorbis_cache import Cache, CacheSettings, KeySchema, SchemaKind, SchemaRegistry
from thorbis_cache.errors import InvalidSchemaError
from thorbis_cache.testing.servers import RedisCluster, RedisSentinelGroup

SPREAD: KeySchema[str] = KeySchema("rr.spread", str, params={"id": int}, ttl=600,
                                   read_from_replicas=True)
EXACT: KeySchema[str] = KeySchema("rr.exact", str, params={"id": int}, ttl=600)


def _registry() -> SchemaRegistry:
    registry = SchemaRegistry()
    registry.register(SPREAD, owner="tests")
    registry.register(EXACT, owner="tests")
    return registry


async def _measured(cache: Cache, replicas: int) -> None:
    """Wait until the heartbeat has measured ``replicas`` replicas within the bound (a
    Cluster lists a replica only once it has replicated a write: the heartbeat's)."""
    await cache.get(SPREAD.key("acme", id=0))  # starts the heartbeat
    assert cache.replicas is not None
    deadline = time.monotonic() + 10
    while len(cache.replicas.lags()) < replicas or any(
            lag > cache.settings.replica_max_lag for lag in cache.replicas.lags().values()):
        assert time.monotonic() < deadline, f"replicas never measured: {cache.replicas.lags()}"
        await asyncio.sleep(0.05)


def test_only_value_schemas_read_from_replicas() -> None:
    with pytest.raises(InvalidSchemaError, match="read_from_replicas"):
        KeySchema("rr.bad", str, params={"id": int}, kind=SchemaKind.HASH, read_from_replicas=True)


@pytest.mark.slow
async def test_replicas_serve_opted_in_schemas_and_the_master_the_others(
    thorbis_redis_cluster: RedisCluster,
) -> None:
    thorbis_redis_cluster.flushall()
    async with Cache.from_url(thorbis_redis_cluster.url, _registry()) as cache:
        await _measured(cache, 3)  # one replica per master
        for i in range(30):
            await cache.set(SPREAD.key(f"t{i}", id=i), f"v{i}")
            await cache.set(EXACT.key(f"t{i}", id=i), f"e{i}")
        await asyncio.sleep(0.2)  # replication of the sets
        before = cache.replicas.replica_reads
        for i in range(30):
            assert await cache.get(SPREAD.key(f"t{i}", id=i)) == f"v{i}"
            assert await cache.get(EXACT.key(f"t{i}", id=i)) == f"e{i}"
        assert cache.replicas.replica_reads - before == 30  # the EXACT reads: master


@pytest.mark.slow
async def test_a_replica_past_the_lag_bound_is_not_read(
    thorbis_redis_sentinel: RedisSentinelGroup,
) -> None:
    """A replica cut from its master still answers reads, with data that ages: once its
    measured lag passes ``replica_max_lag`` it is skipped, so a value changed on the
    master is never read from it after the bound (without the bound: every read of it
    would return the old value)."""
    group = thorbis_redis_sentinel
    group.flushall()
    settings = CacheSettings(replica_max_lag=0.3)
    async with Cache.from_url(group.url, _registry(), settings=settings) as cache:
        key = SPREAD.key("acme", id=1)
        await cache.set(key, "old")
        await _measured(cache, 2)
        assert await cache.get(key) == "old"
        # Cut every replica from the master (they keep serving stale data).
        for replica in group.replicas():
            replica.command("REPLICAOF", "127.0.0.1", "1")
        cut = time.monotonic()
        await cache.set(key, "new")
        bound = settings.replica_max_lag + 0.1 + 0.1  # + one heartbeat + its own read
        stale_after_bound = 0
        while time.monotonic() - cut < bound + 1.0:
            if await cache.get(key) == "old" and time.monotonic() - cut > bound:
                stale_after_bound += 1
            await asyncio.sleep(0.01)
        assert stale_after_bound == 0
        assert cache.replicas is not None
        assert cache.replicas.master_reads > 0
