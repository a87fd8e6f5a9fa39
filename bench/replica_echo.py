"""What the worker's second pass for readers on replicas costs (``invalidation/replica_echo``).

A primary with a streaming standby, home_services under capture triggers, ``--rows``
customers changed by one UPDATE, then drained by a worker with the second pass off and
on, interleaved, ``--repeat`` times in one run. Printed per variant (medians): the
drain's changes/s (the first pass, what the issue's apply-rate target measures: the
second pass adds a WAL-position read per batch) and, with the second pass, the seconds
from the end of the drain until the standby had replayed the batches and their
invalidations were applied again; then the ratio on / off.

    .venv/bin/python bench/replica_echo.py [--rows 20000] [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from core_testing import CUSTOMER_SQL  # noqa: E402

from thorbis_cache import CacheApp, KeyRing  # noqa: E402
from thorbis_cache.invalidation.worker import OutboxWorker  # noqa: E402
from thorbis_cache.plugins.manager import PluginManager  # noqa: E402
from thorbis_cache.postgres.setup import setup_database  # noqa: E402
from thorbis_cache.testing.servers import RedisServer  # noqa: E402
from thorbis_cache.testing.servers.postgres_server import PostgresServer  # noqa: E402


async def one_run(app: CacheApp, dsn: str, conn: asyncpg.Connection, echo: bool,
                  round_: int) -> tuple[float, float]:
    """(changes/s of the drain, seconds until the second pass was applied)."""
    status = await conn.execute("UPDATE hs.customers SET phone = $1", f"r{round_}")
    changed = int(status.split()[-1])
    async with OutboxWorker.from_app(app, dsn, capture=None, replica_echo=echo) as worker:
        await worker.check_capture()
        started = time.perf_counter()
        applied = 0
        while (result := await worker.run_once()).claimed:  # drain() without its settle
            applied += result.claimed
        drained = time.perf_counter()
        assert applied == changed, (applied, changed)
        while worker.echo is not None and worker.echo.pending:
            await worker.drain()  # nothing left: its settle applies what is due
            await asyncio.sleep(0.001)
        echoed = time.perf_counter()
    return applied / (drained - started), echoed - drained


async def main(rows: int, repeat: int) -> dict[str, float]:
    primary = PostgresServer().start()
    standby = redis = None
    try:
        standby = PostgresServer(standby_of=primary).start()
        redis = RedisServer().start()
        dsn = primary.dsn()
        manager = PluginManager()
        await manager.load(["home_services"])
        await setup_database(dsn, manager, capture="triggers")
        app = await CacheApp(redis.url, keyring=KeyRing.generate()).start(["home_services"])
        conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "on"})
        try:
            await conn.execute(CUSTOMER_SQL, "acme", rows)
            async with OutboxWorker.from_app(app, dsn, capture=None) as worker:
                await worker.drain()
            rates: dict[bool, list[float]] = {False: [], True: []}
            lags: list[float] = []
            round_ = 0
            for _ in range(repeat):
                for echo in (False, True):
                    rate, lag = await one_run(app, dsn, conn, echo, round_)
                    round_ += 1
                    rates[echo].append(rate)
                    if echo:
                        lags.append(lag)
        finally:
            await conn.close()
            await app.aclose()
    finally:
        for server in (redis, standby, primary):
            if server is not None:
                server.stop()
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    figures = {"rows": rows, "repeat": repeat, "off_changes_per_s": off,
               "on_changes_per_s": on, "ratio": on / off,
               "second_pass_after_s": statistics.median(lags)}
    print(f"drain of {rows:,} changes, a streaming standby, medians of {repeat}:")
    print(f"  second pass off: {off:,.0f} changes/s")
    print(f"  second pass on:  {on:,.0f} changes/s ({on / off:.2f}x), second pass applied "
          f"{figures['second_pass_after_s'] * 1000:.0f} ms after the drain")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.rows, args.repeat))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
