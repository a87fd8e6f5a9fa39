"""The demo's Zipf read workload through ``get_or_load``, timed per class of call.

The reads are of the home_services plugin's ``hs.customer_summary`` (a sensitive value
schema: names and contact data, encrypted), filled by the plugin's own loader
``loaders.customer_summary`` from its ``hs.customer_summary`` materialized view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from thorbis_home_services import CustomerSummary, loaders
from thorbis_home_services.schemas import CUSTOMER_SUMMARY

from thorbis_cache.cache.core import Cache
from thorbis_cache.demo.data import counter
from thorbis_cache.demo.database import Database
from thorbis_cache.demo.results import LatencySummary, WorkloadResult

__all__ = ["run_workload"]

# Enough GETs for a stable p99 of the warm and raw passes, few enough to cost ~2 s here.
_ANCHOR_READS = 5000
_WORKLOAD_COUNTERS = ("hits", "misses", "loads", "coalesced", "lease_waits", "fills_rejected")


async def _concurrently(
    count: int,
    concurrency: int,
    call: Callable[[int], Awaitable[None]],
    progress: Callable[[int], None] | None = None,
) -> float:
    """Run ``call(0) .. call(count - 1)`` on ``concurrency`` workers; returns seconds."""
    position = 0

    async def worker() -> None:
        nonlocal position
        # One event loop thread: taking the next index needs no lock.
        while position < count:
            index = position
            position += 1
            await call(index)
            if progress is not None and position % 250 == 0:
                progress(position)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(min(concurrency, count)):
            group.create_task(worker(), name=f"demo-reader-{i}")
    if progress is not None:
        progress(count)
    return time.perf_counter() - t0


async def _warm_vs_raw(
    cache: Cache, plan: Sequence[tuple[str, int]], concurrency: int
) -> tuple[LatencySummary, LatencySummary]:
    """``cache.get`` against a raw GET of the same keys; see :class:`WorkloadResult`."""
    keys = [CUSTOMER_SUMMARY.key(t, customer_id=c) for t, c in plan[:_ANCHOR_READS]]
    names = [cache.redis_key(k) for k in keys]
    warm: list[int] = []
    raw: list[int] = []

    async def typed(index: int) -> None:
        t0 = time.perf_counter_ns()
        await cache.get(keys[index])
        warm.append(time.perf_counter_ns() - t0)

    async def plain(index: int) -> None:
        t0 = time.perf_counter_ns()
        await cache.store.get(names[index])
        raw.append(time.perf_counter_ns() - t0)

    # Alternate halves so that a drift of the machine's speed hits both alike.
    half = len(keys) // 2
    for call in (typed, plain, plain, typed):
        await _concurrently(half, concurrency, call)
    return LatencySummary.of(warm), LatencySummary.of(raw)


async def run_workload(
    cache: Cache,
    db: Database,
    plan: Sequence[tuple[str, int]],
    concurrency: int,
    progress: Callable[[int], None] | None,
) -> WorkloadResult:
    """Read every (tenant, customer id) of ``plan`` through ``cache.get_or_load``.

    Each call is timed and classed as a hit, a miss (its own loader ran) or coalesced
    (it waited for another call's load); then the warm ``cache.get`` and raw GET passes
    are measured over the same keys.

    :param cache: the demo's cache.
    :param db: the loaders' data access; the queries it ran meanwhile are reported.
    :param plan: the reads, in order (see :func:`~thorbis_cache.demo.data.read_plan`).
    :param concurrency: concurrent readers.
    :param progress: called with the number of reads done so far, or None.
    :returns: the measurements.
    """
    hits: list[int] = []
    misses: list[int] = []
    coalesced: list[int] = []
    # Per key: loads running now, and loads ever started. A call whose own loader did
    # not run but which overlapped a load of its key waited for that load, so its
    # latency is a miss's, not a hit's; it is reported apart.
    running: dict[str, int] = {}
    started: dict[str, int] = {}
    queries_before = db.queries

    async def read(index: int) -> None:
        tenant, customer_id = plan[index]
        key = CUSTOMER_SUMMARY.key(tenant, customer_id=customer_id)
        body = key.body
        loaded = False

        async def loader() -> CustomerSummary:
            nonlocal loaded
            loaded = True
            running[body] = running.get(body, 0) + 1
            started[body] = started.get(body, 0) + 1
            try:
                return await loaders.customer_summary(db.fetch, tenant, customer_id)
            finally:
                running[body] -= 1

        busy, epoch = running.get(body, 0), started.get(body, 0)
        t0 = time.perf_counter_ns()
        await cache.get_or_load(key, loader)
        elapsed = time.perf_counter_ns() - t0
        if loaded:
            misses.append(elapsed)
        elif busy or started.get(body, 0) != epoch:
            coalesced.append(elapsed)
        else:
            hits.append(elapsed)

    elapsed = await _concurrently(len(plan), concurrency, read, progress)
    # Counters first: the warm pass below adds hits of its own.
    metrics = {n: counter(cache, n, CUSTOMER_SUMMARY) for n in _WORKLOAD_COUNTERS}
    queries = db.queries - queries_before
    warm, raw = await _warm_vs_raw(cache, plan, concurrency)
    return WorkloadResult(
        reads=len(plan),
        hits=len(hits),
        misses=len(misses),
        coalesced=len(coalesced),
        db_queries=queries,
        distinct_keys=len(set(plan)),
        elapsed_s=elapsed,
        hit_latency=LatencySummary.of(hits),
        miss_latency=LatencySummary.of(misses),
        coalesced_latency=LatencySummary.of(coalesced),
        warm_get_latency=warm,
        raw_get_latency=raw,
        metrics=metrics,
    )
