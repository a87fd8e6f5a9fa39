"""One Cluster shard lost for a while under writes: what the live shards' changes pay.

    .venv/bin/python bench/shard_loss.py                     # triggers, 20 s
    .venv/bin/python bench/shard_loss.py --capture logical --seconds 30

On a private PostgreSQL (home_services, ``bench/capture.py``'s setup) and a private
Redis Cluster (3 masters, a replica each, a node timeout of an hour so that nothing
fails over), with the worker's own loop (``OutboxWorker.run``) in this process, one
connection commits single-row UPDATEs of a tenant at ``--lost-rate`` tx/s, and a probe
measures another tenant, on another shard: its entry written, a row of it updated, and
the time from that commit until the worker has deleted the entry (every
``--probe-every`` seconds). For ``--seconds`` every shard is up (the anchor), then the
first tenant's master is frozen (SIGSTOP: a hung process, a partition) for as long.
Then it is thawed, and the time until every parked change is applied is taken.
Commits are flushed (``synchronous_commit = on``), as in production.

Printed: the probed tenant's commit -> invalidated p50, p99 and max with every shard
up and with one lost, the changes parked (counted each time: more than the lost
tenant wrote when parked changes are claimed, refused and parked again), the worker's
tries of a tenant still away, and the catch-up after the thaw. Run the previous
release's code through ``PYTHONPATH`` to compare. A report, not a test: exit status 0
whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capture  # a sibling script module, found through the line above
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.testing.servers import PostgresServer, RedisCluster

CUSTOMERS = 1_000
UPDATE = "UPDATE hs.customers SET phone = $3 WHERE tenant_id = $1 AND id = $2"
#: Commits flushed (the test server's default is off): logical decoding reads flushed
#: WAL only, and a production server flushes at commit.
FLUSHED = {"synchronous_commit": "on"}


def _two_shards(app: CacheApp, cluster: RedisCluster) -> tuple[str, str]:
    """A tenant on a master that stays (the probe's) and one on another (lost)."""
    def master(tenant: str) -> int:
        return cluster.master_for_key(app.cache.redis_key(CUSTOMER.key(tenant, customer_id=1)))

    live = "acme"
    lost = next(f"t{i}" for i in range(1000) if master(f"t{i}") != master(live))
    return live, lost


async def _lost_writes(dsn: str, tenant: str, rate: float, stop: asyncio.Event) -> int:
    """Single-row UPDATEs of ``tenant`` at ``rate`` tx/s until ``stop``; how many."""
    conn = await asyncpg.connect(dsn, server_settings=FLUSHED)
    n = 0
    started = time.perf_counter()
    try:
        while not stop.is_set():
            await conn.execute(UPDATE, tenant, n % CUSTOMERS + 1, f"l{n}")
            n += 1
            ahead = started + n / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await conn.close()
    return n


async def _probe(app: CacheApp, conn: asyncpg.Connection, tenant: str, i: int,
                 limit: float) -> float:
    """Seconds from the commit of an UPDATE of ``tenant``'s customer until the worker
    deleted its entry (``limit`` when it was not within that)."""
    store = app.cache.store
    key = app.cache.redis_key(CUSTOMER.key(tenant, customer_id=i % CUSTOMERS + 1))
    while True:  # a Cluster failing a master over answers CLUSTERDOWN for a while
        try:
            await store.set(key, b"stale", 600_000)
            break
        except RedisUnavailableError:
            await asyncio.sleep(0.01)
    await conn.execute(UPDATE, tenant, i % CUSTOMERS + 1, f"p{i}")
    committed = time.perf_counter()
    while True:
        try:
            if await store.get(key) is None:
                return time.perf_counter() - committed
        except RedisUnavailableError:
            pass
        if time.perf_counter() - committed > limit:
            return limit
        await asyncio.sleep(0.001)


async def _pending(conn: asyncpg.Connection) -> int:
    parked = "thorbis.parked_changes" if await conn.fetchval(
        "SELECT to_regclass('thorbis.parked_changes') IS NOT NULL") else None
    total = int(await conn.fetchval("SELECT count(*) FROM thorbis.outbox"))
    if parked is not None:
        total += int(await conn.fetchval(f"SELECT count(*) FROM {parked}"))  # noqa: S608
    return total


async def run(options: argparse.Namespace) -> dict[str, Any]:
    mode = {"triggers": "trigger", "logical": "logical"}[options.capture]
    with PostgresServer() as server, RedisCluster(
            3, replicas=1, node_timeout_ms=round(options.node_timeout * 1000)) as cluster:
        dsn = server.dsn()
        conn, manager = await capture.setup_db(dsn)
        await conn.execute("SET synchronous_commit = on")
        app = await CacheApp(cluster.url, keyring=KeyRing.generate()).start(["home_services"])
        live, lost = _two_shards(app, cluster)
        await conn.execute(capture.CUSTOMERS_SQL, lost, CUSTOMERS)  # acme has its own
        await capture.MODES[mode](conn, manager)
        await capture.fresh(conn)
        worker = capture.WORKERS[mode](app, dsn)
        await worker.drain()
        loop = asyncio.create_task(worker.run())
        frozen = cluster.master_for_key(app.cache.redis_key(CUSTOMER.key(lost, customer_id=1)))
        baseline: list[float] = []
        samples: list[float] = []
        stop = asyncio.Event()
        try:
            for i in range(20):  # the worker's loop warm: latencies as it runs
                await _probe(app, conn, live, i, 5.0)
            writes = asyncio.create_task(_lost_writes(dsn, lost, options.lost_rate, stop))
            i = 100
            for phase, into in (("baseline", baseline), ("lost", samples)):
                if phase == "lost":
                    cluster.freeze(frozen)
                ends = time.perf_counter() + options.seconds
                while time.perf_counter() < ends:
                    into.append(await _probe(app, conn, live, i, options.seconds))
                    i += 1
                    await asyncio.sleep(options.probe_every)
            stop.set()
            written = await writes
            parked_tries = getattr(worker.metrics, "parked_tries", None)
            parked = worker.metrics.parked
            pending_at_thaw = await _pending(conn)
            cluster.thaw(frozen)
            frozen = -1
            thawed = time.perf_counter()
            while await _pending(conn):
                if time.perf_counter() - thawed > 120:
                    break
                await asyncio.sleep(0.01)
            catch_up = time.perf_counter() - thawed
        finally:
            stop.set()
            if frozen >= 0:
                cluster.thaw(frozen)
            worker.stop()
            with contextlib.suppress(Exception):
                await loop
            await worker.aclose()
            await app.aclose()
            await conn.close()
    if options.samples:
        print(" ".join(f"{x * 1e3:.0f}" for x in samples))
    return {
        "capture": options.capture, "seconds": options.seconds,
        "lost_tenant_writes": written, "probes": len(samples),
        **_figures("baseline", baseline), **_figures("live", samples),
        # Parked more often than the lost tenant wrote: the rotation the live batches paid.
        "parked": parked,
        "parked_tries": parked_tries, "pending_at_thaw": pending_at_thaw,
        "catch_up_s": catch_up,
    }


def _figures(name: str, samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {f"{name}_p50_ms": statistics.median(ordered) * 1e3,
            f"{name}_p99_ms": capture.percentile(ordered, 99) * 1e3,
            f"{name}_max_ms": ordered[-1] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capture", choices=["triggers", "logical"], default="triggers")
    parser.add_argument("--seconds", type=float, default=20.0, help="shard lost (20)")
    parser.add_argument("--lost-rate", type=float, default=200.0,
                        help="tx/s of the lost shard's tenant (200)")
    parser.add_argument("--probe-every", type=float, default=0.05,
                        help="seconds between two probes of the live tenant (0.05)")
    parser.add_argument("--node-timeout", type=float, default=3600.0,
                        help="the Cluster's node timeout, s (3600: no failover; a few "
                             "seconds: the lost master's replica takes over meanwhile)")
    parser.add_argument("--log", action="store_true", help="the worker's log lines too")
    parser.add_argument("--samples", action="store_true", help="print every probe (ms)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    logging.basicConfig(level=logging.INFO if options.log else logging.ERROR,
                        format="%(relativeCreated)7.0f %(levelname)s %(name)s: %(message)s")
    figures = asyncio.run(run(options))
    if options.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['capture']}: one shard lost {figures['seconds']:g} s, its tenant "
          f"writing {figures['lost_tenant_writes']:,} changes")
    for name, what in (("baseline", "every shard up"), ("live", "one shard lost")):
        print(f"  live tenant commit -> invalidated, {what}: p50 "
              f"{figures[f'{name}_p50_ms']:.1f} ms, p99 {figures[f'{name}_p99_ms']:.1f} ms, "
              f"max {figures[f'{name}_max_ms']:.1f} ms")
    print(f"  changes parked (counted each time): {figures['parked']:,}; tries of a tenant "
          f"still away: {figures['parked_tries']}")
    print(f"  changes waiting when the master was thawed: {figures['pending_at_thaw']:,}; "
          f"every parked change applied {figures['catch_up_s']:.2f} s after the thaw")


if __name__ == "__main__":
    main()
