"""What per-operation metrics cost on the hit path: ``Cache.get_or_load`` hits with the
observer off (``cache.observer is None``, the default) and on (an
:class:`~thorbis_cache.observability.OperationObserver`: latency histogram per schema and
operation, tenant traffic through :class:`~thorbis_cache.observability.TopTenants`), in the
same process and run, against the same throw-away redis-server and the same entries.

Run ``.venv/bin/python bench/metrics_overhead.py`` (``--quick`` for a smoke run). Calls
alternate off/on one by one (the order flipping every pair), so both see the same server,
load and CPU frequency; every round reports the median of each, and the ratio printed is
the median of the rounds' ratios. The budget is 3% of a hit. Also printed: the cost of
``TopTenants.add`` alone per call, for traffic over few and over 100,000 tenants. A
report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time

import attrs

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.observability import OperationObserver, TopTenants
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisServer

BUDGET = 1.03


@attrs.frozen(slots=True)
class Order:
    order_id: int
    customer: str
    status: str
    total: float
    notes: str


ORDER = KeySchema("bench.order", Order, params={"order_id": int}, ttl=3600)


async def _hits(server: RedisServer, pairs: int, rounds: int, tenants: int) -> list[float]:
    registry = SchemaRegistry()
    registry.register(ORDER, owner="bench")
    store = RedisStore.from_url(server.url)
    off = Cache(store, registry)
    on = Cache(store, registry)
    on.observer = OperationObserver(TopTenants(20))
    rng = random.Random(1)
    names = [f"t{i:05d}" for i in range(tenants)]
    weights = [1 / (rank + 1) for rank in range(tenants)]  # Zipf: a few busy tenants
    keys = [ORDER.key(t, order_id=i) for i, t in enumerate(rng.choices(names, weights, k=200))]
    for key in keys:
        await off.set(key, Order(key.params["order_id"], "x" * 40, "open", 12.5, "y" * 300))

    async def load() -> Order:
        raise AssertionError("every read must be a hit")

    ratios: list[float] = []
    try:
        for key in keys:  # warm-up: connections, code paths
            await off.get_or_load(key, load)
            await on.get_or_load(key, load)
        for r in range(rounds):
            times: dict[bool, list[int]] = {False: [], True: []}
            gc.collect()
            gc.disable()
            try:
                for i in range(pairs):
                    key = keys[i % len(keys)]
                    for observed in ((False, True) if i % 2 == 0 else (True, False)):
                        cache = on if observed else off
                        started = time.perf_counter_ns()
                        await cache.get_or_load(key, load)
                        times[observed].append(time.perf_counter_ns() - started)
            finally:
                gc.enable()
            p50_off = statistics.median(times[False]) / 1000
            p50_on = statistics.median(times[True]) / 1000
            ratios.append(p50_on / p50_off)
            print(f"round {r + 1}: hit p50 off {p50_off:7.1f} us  on {p50_on:7.1f} us  "
                  f"ratio {p50_on / p50_off:.4f}")
        assert on.observer is not None
        on.observer.collect()  # one scrape: the figures are there
    finally:
        await off.aclose()
        await on.aclose()
        await store.aclose()
    return ratios


def _tracker_ns(calls: int, tenants: list[str]) -> float:
    tracker = TopTenants(20)
    started = time.perf_counter_ns()
    for tenant in tenants[:calls]:
        tracker.add(tenant)
    return (time.perf_counter_ns() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (a few seconds)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=4000, help="off/on pairs per round")
    args = parser.parse_args()
    rounds, pairs = (2, 500) if args.quick else (args.rounds, args.pairs)
    with RedisServer() as server:
        ratios = asyncio.run(_hits(server, pairs, rounds, tenants=1000))
    ratio = statistics.median(ratios)
    verdict = "within" if ratio <= BUDGET else "OVER"
    print(f"get_or_load hit with metrics on / off: {ratio:.4f} "
          f"({(ratio - 1) * 100:+.2f}%; {verdict} the 3% budget; median of {rounds} rounds "
          f"of {pairs} pairs)")
    rng = random.Random(2)
    zipf = rng.choices([f"t{i}" for i in range(10_000)],
                       [1 / (r + 1) for r in range(10_000)], k=200_000)
    distinct = [f"t{i:06d}" for i in range(100_000)]
    print(f"TopTenants.add: {_tracker_ns(len(zipf), zipf):.0f} ns per call over 10,000 "
          f"Zipf tenants; {_tracker_ns(len(distinct), distinct):.0f} ns per call over "
          "100,000 distinct tenants")


if __name__ == "__main__":
    main()
