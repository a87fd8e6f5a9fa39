"""One big transaction under logical capture: the worker's memory and drain time, with
its changes held row by row until the commit (as before) and by tenant past
``max_transaction_changes`` (``postgres/logical_rows.MAX_HELD``, shipped).

A primary, Redis, home_services under logical capture, ``--rows`` acme customers; each
round is one ``UPDATE hs.customers SET account_status`` of every row (one transaction),
then drained by a fresh worker process with the variant's bound (so that each peak RSS
is its own), with the longest its event loop went without a turn (what its /metrics and
/health wait for). Variants interleaved, ``--repeat`` times, in one run; medians printed
with the ratio shipped / row by row.

    .venv/bin/python bench/bulk_transaction.py [--rows 200000] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from core_testing import CUSTOMER_SQL  # noqa: E402

from thorbis_cache import CacheApp, KeyRing  # noqa: E402
from thorbis_cache.invalidation.worker import OutboxWorker  # noqa: E402
from thorbis_cache.plugins.manager import PluginManager  # noqa: E402
from thorbis_cache.postgres.logical import LogicalCapture  # noqa: E402
from thorbis_cache.postgres.logical_rows import MAX_HELD  # noqa: E402
from thorbis_cache.postgres.setup import setup_database  # noqa: E402
from thorbis_cache.testing.servers import RedisServer  # noqa: E402
from thorbis_cache.testing.servers.postgres_server import PostgresServer  # noqa: E402

SLOT = "bulk"
VARIANTS = {"by row (before)": 10**12, "by tenant (shipped)": MAX_HELD}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


async def drain(dsn: str, redis_url: str, bound: int) -> dict[str, float]:
    """In the child: drain the slot with ``bound``; the drain's seconds, the process's
    peak RSS while draining and its RSS before."""
    app = await CacheApp(redis_url, keyring=KeyRing.generate()).start(["home_services"])
    try:
        capture = LogicalCapture(SLOT, app.plugins.all_rules(), app.plugins.all_views(),
                                 max_transaction_changes=bound)
        async with OutboxWorker.from_app(app, dsn, capture=capture) as worker:
            before = _rss_mb()
            peak = before
            stop = threading.Event()

            def sample() -> None:  # a thread: the drain may hold the loop for long
                nonlocal peak
                while not stop.wait(0.02):
                    peak = max(peak, _rss_mb())

            sampler = threading.Thread(target=sample)
            sampler.start()
            gaps = [0.0]

            async def beat() -> None:  # the longest the event loop went without a turn
                last = time.perf_counter()
                while True:
                    await asyncio.sleep(0.005)
                    now = time.perf_counter()
                    gaps[0] = max(gaps[0], now - last)
                    last = now

            beating = asyncio.create_task(beat())
            started = time.perf_counter()
            results = await worker.drain()
            seconds = time.perf_counter() - started
            beating.cancel()
            stop.set()
            sampler.join()
            assert sum(len(r.processed) for r in results) > 0
    finally:
        await app.aclose()
    return {"seconds": seconds, "rss_before_mb": before, "loop_gap_ms": gaps[0] * 1000,
            "peak_rss_mb": max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _child(dsn: str, redis_url: str, bound: int) -> dict[str, float]:
    """:func:`drain` in a process of its own (so that its peak RSS is its own)."""
    done = subprocess.run([sys.executable, __file__, "--child", dsn, redis_url, str(bound)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the worker's process failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


async def main(rows: int, repeat: int) -> dict[str, object]:
    pg = PostgresServer().start()
    redis = None
    try:
        redis = RedisServer().start()
        dsn = pg.dsn()
        manager = PluginManager()
        await manager.load(["home_services"])
        await setup_database(dsn, manager, capture="logical", slot=SLOT)
        conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "on"})
        try:
            await conn.execute(CUSTOMER_SQL, "acme", rows)
            _child(dsn, redis.url, MAX_HELD)  # the INSERT's own drain, not kept
            figures: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
            for _ in range(repeat):
                for name, bound in VARIANTS.items():
                    status = ("suspended", "active")[len(figures[name]) % 2]
                    await conn.execute("UPDATE hs.customers SET account_status = $1", status)
                    figures[name].append(_child(dsn, redis.url, bound))
        finally:
            await conn.close()
    finally:
        if redis is not None:
            redis.stop()
        pg.stop()
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for name, runs in figures.items()}
    before, shipped = medians["by row (before)"], medians["by tenant (shipped)"]
    print(f"one UPDATE of {rows:,} rows under logical capture, worker in its own process, "
          f"medians of {repeat}:")
    for name, m in medians.items():
        print(f"  {name:20} drain {m['seconds']:6.1f} s   peak RSS {m['peak_rss_mb']:7.0f} MB "
              f"(before the drain {m['rss_before_mb']:.0f} MB)   longest event-loop gap "
              f"{m['loop_gap_ms']:.0f} ms")
    print(f"  shipped / before: drain {shipped['seconds'] / before['seconds']:.2f}x, "
          f"peak RSS {shipped['peak_rss_mb'] / before['peak_rss_mb']:.2f}x")
    return {"rows": rows, "repeat": repeat, "max_held": MAX_HELD, "medians": medians,
            "runs": figures}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_dsn, child_redis, child_bound = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(asyncio.run(drain(child_dsn, child_redis, child_bound))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.rows, args.repeat))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
