"""The Redis adapter against a real Cluster: what the driver does on first use."""

from __future__ import annotations

import asyncio

import pytest

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script
from thorbis_cache.testing.servers import RedisCluster

LABEL = KeySchema("st.label", str, params={"id": int}, ttl=60)

#: Counts its runs per key: run once per call, every key ends at 1.
COUNT_RUNS = "redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[1])"


async def test_a_fresh_cluster_store_runs_each_script_call_once(
    thorbis_cluster_redis_url: str,
) -> None:
    """redis-py 8's cluster client, used concurrently before it knows the slot map, was
    seen running a script twice (about 1 burst in 4 of 8 calls): the store maps the
    cluster before its first call goes out."""
    for trial in range(20):
        async with RedisStore.from_url(thorbis_cluster_redis_url) as store:
            script = Script("count_runs", f"{COUNT_RUNS} -- trial {trial}")
            keys = [f"{{trial{trial}}}:k{i}" for i in range(8)]
            replies = await asyncio.gather(*(store.run(script, [k], []) for k in keys))
            assert replies == [b"1"] * 8, f"trial {trial}: a script ran twice: {replies}"


async def test_a_dead_cluster_is_our_unavailable_error_and_reads_degrade(
    thorbis_redis_cluster: RedisCluster,
) -> None:
    """redis-py's RedisClusterException ("Redis Cluster cannot be connected") is not a
    RedisError: it escaped the seam as a driver exception, so reads raised instead of
    degrading, and the worker spent a change's attempts on it. Whole cluster down, at
    first use and after it: our RedisUnavailableError, and get_or_load degrades."""
    registry = SchemaRegistry()
    registry.register(LABEL, owner="tests")
    url = thorbis_redis_cluster.url
    async with Cache.from_url(url, registry) as warm:
        assert await warm.get_or_load(LABEL.key("acme", id=1), _label) == "label"
        for index in range(len(thorbis_redis_cluster.nodes)):
            thorbis_redis_cluster.kill(index)
        try:
            async with Cache.from_url(url, registry) as fresh:
                for cache in (warm, fresh):
                    with pytest.raises(RedisUnavailableError):
                        await cache.get(LABEL.key("acme", id=1))
                    assert await cache.get_or_load(LABEL.key("acme", id=1), _label) == "label"
                    assert cache.metrics.for_schema(LABEL.name).degraded_loads == 1
        finally:
            thorbis_redis_cluster.repair()


async def _label() -> str:
    return "label"
