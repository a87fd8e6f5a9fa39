"""The Redis adapter against a real Cluster: what the driver does on first use."""

from __future__ import annotations

import asyncio

from thorbis_cache.redis_store import RedisStore, Script

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
