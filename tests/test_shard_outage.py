"""One Cluster shard out of reach must not take the other shards' tenants with it.

A tenant's keys share one hash slot, so on a Cluster each tenant lives on one shard.
When one master stops answering (frozen, partitioned, or dead until the Cluster fails
it over: ``cluster-node-timeout``, 15 s by default), Redis keeps serving every other
shard; so must the cache, instead of refusing everyone's calls and sending every
tenant's reads to the database at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.observability.transport import TransportCollector
from thorbis_cache.testing.servers import RedisCluster

pytestmark = pytest.mark.slow

NOTE: KeySchema[str] = KeySchema("shard.note", str, params={"id": int}, ttl=600)


def _tenants_on_two_shards(cache: Cache, cluster: RedisCluster) -> tuple[str, str]:
    by_master: dict[int, str] = {}
    for i in range(200):
        tenant = f"t{i}"
        by_master.setdefault(cluster.master_for_key(cache.redis_key(NOTE.key(tenant, id=1))),
                             tenant)
        if len(by_master) >= 2:
            first, second = list(by_master.values())[:2]
            return first, second
    raise AssertionError("no two tenants on two shards among 200")


async def test_a_silent_shard_leaves_the_other_shards_tenants_served(
        thorbis_redis_cluster: RedisCluster) -> None:
    cluster = thorbis_redis_cluster
    cluster.flushall()
    registry = SchemaRegistry()
    registry.register(NOTE, owner="tests")
    # Calls time out after 0.25 s, so that the silent shard's fail several times over
    # within the test kit's node timeout (1 s), before the Cluster reacts.
    async with Cache.from_url(f"{cluster.url}?socket_timeout=0.25", registry) as cache:
        down, up = _tenants_on_two_shards(cache, cluster)
        await cache.set(NOTE.key(down, id=1), "down's")
        await cache.set(NOTE.key(up, id=1), "up's")
        frozen = cluster.master_for_key(cache.redis_key(NOTE.key(down, id=1)))
        cluster.freeze(frozen)
        try:
            refused: list[str] = []
            served = 0

            async def reader_of_the_silent_shard() -> None:
                while time.monotonic() < until:
                    with contextlib.suppress(RedisUnavailableError):
                        await cache.get(NOTE.key(down, id=1))
                    await asyncio.sleep(0.005)

            async def reader_of_a_live_shard() -> None:
                nonlocal served
                while time.monotonic() < until:
                    try:
                        assert await cache.get(NOTE.key(up, id=1)) == "up's"
                        served += 1
                    except RedisUnavailableError as exc:
                        refused.append(str(exc))
                    await asyncio.sleep(0.005)

            # Shorter than the node timeout and the failover: only the one shard is out.
            until = time.monotonic() + 0.9
            await asyncio.gather(*(reader_of_the_silent_shard() for _ in range(8)),
                                 reader_of_a_live_shard())
            assert served > 0
            # The silent shard's calls fail fast on their own breaker, not the store's.
            breakers = cache.store.breakers.every()
            assert breakers[""].opens == 0
            assert sum(b.opens for name, b in breakers.items() if name) >= 1
            # ... and the operator sees which one.
            registry = CollectorRegistry()
            registry.register(TransportCollector(cache.store))
            scraped = generate_latest(registry).decode()
            node = cluster.nodes[frozen]
            assert 'thorbis_cache_redis_circuit_opens_total{breaker="store"} 0.0' in scraped
            opened = [line for line in scraped.splitlines() if line.startswith(
                f'thorbis_cache_redis_circuit_opens_total{{breaker="{node.host}:{node.port}"}}')]
            assert opened, scraped
            assert float(opened[0].split()[-1]) >= 1
            assert refused == [], (
                f"{len(refused)} reads of a live shard refused ({served} served); "
                f"first: {refused[0]}")
        finally:
            cluster.thaw(frozen)
            cluster.wait_ok()
