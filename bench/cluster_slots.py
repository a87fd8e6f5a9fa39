"""A multi-slot call on a Cluster: ``RedisStore.mget`` and ``delete`` of 100 keys spread
over 1, 10 and 100 tenants (hash slots), on a 3-master Cluster started for the run.

    .venv/bin/python bench/cluster_slots.py

Microseconds per call (mget: best of 5 x 200 calls; delete: p50 of 100). Since every
slot's command is written before any reply is awaited, a call over many tenants costs
about one round trip per master instead of one per slot. A report: exit status 0
whatever the numbers.
"""

from __future__ import annotations

import asyncio
import time

from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisCluster

KEYS = 100
VALUE = b"x" * 1024


async def measure(url: str) -> None:
    store = RedisStore.from_url(url)
    try:
        for tenants in (1, 10, 100):
            keys = [f"tc:{{t{i % tenants}}}:k{i}" for i in range(KEYS)]
            await asyncio.gather(*(store.set(k, VALUE, 600_000) for k in keys))
            for _ in range(50):
                await store.mget(keys)
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(200):
                    await store.mget(keys)
                best = min(best, (time.perf_counter() - started) / 200 * 1e6)
            deletes: list[float] = []
            for _ in range(100):
                started = time.perf_counter()
                removed = await store.delete(keys)
                deletes.append(time.perf_counter() - started)
                if removed != KEYS:
                    raise SystemExit(f"delete removed {removed} of {KEYS} keys")
                await asyncio.gather(*(store.set(k, VALUE, 600_000) for k in keys))
            deletes.sort()
            print(f"{tenants:3d} tenant(s): mget({KEYS}) {best:7.1f} us, "
                  f"delete({KEYS}) p50 {deletes[len(deletes) // 2] * 1e6:7.1f} us, "
                  f"handovers to redis-py {store.handovers}")
    finally:
        await store.aclose()


def main() -> int:
    with RedisCluster(3) as cluster:
        asyncio.run(measure(cluster.url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
