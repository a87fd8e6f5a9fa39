"""Where the host's writes spend their time with and without capture triggers: a report.

    .venv/bin/python bench/capture_waits.py            # about 30 s
    .venv/bin/python bench/capture_waits.py --runs 3 --seconds 5

On a private PostgreSQL set up as ``bench/capture.py`` does (home_services, 20,000
customers), each run drives the single-row UPDATE with ``pgbench`` on 8 connections, in
turn without capture and with the capture triggers, while this process samples
``pg_stat_activity`` every 20 ms: the share of active client backends on CPU (no wait
event), waiting for the client, or waiting on a lock (by wait event). It prints tx/s and
the most frequent states per mode. A report, not a test: exit status 0 whatever the
numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capture  # a sibling script module, found through the line above

from thorbis_cache.testing.servers import PostgresServer

SAMPLE_SQL = """
SELECT coalesce(wait_event_type, 'CPU') AS kind, coalesce(wait_event, '-') AS event
  FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()
"""


async def _sample(dsn: str, stop: asyncio.Event, counts: collections.Counter[tuple[str, str]]
                  ) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            for row in await conn.fetch(SAMPLE_SQL):
                counts[(row["kind"], row["event"])] += 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def run(runs: int, seconds: float) -> None:
    """Every run, both modes; prints one line per mode and run."""
    with PostgresServer() as server:
        dsn = server.dsn()
        conn, manager = await capture.setup_db(dsn)
        try:
            for _ in range(runs):
                for mode in ("none", "trigger"):
                    await capture.MODES[mode](conn, manager)
                    await capture.fresh(conn)
                    counts: collections.Counter[tuple[str, str]] = collections.Counter()
                    stop = asyncio.Event()
                    sampler = asyncio.create_task(_sample(dsn, stop, counts))
                    result = await asyncio.to_thread(capture.pgbench, server, 8, seconds)
                    stop.set()
                    await sampler
                    total = sum(counts.values()) or 1
                    states = ", ".join(f"{kind}:{event} {n / total:.0%}"
                                       for (kind, event), n in counts.most_common(6))
                    print(f"{mode:8s} {result.tps:8,.0f} tx/s  {states}")
        finally:
            await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="repetitions (2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per pgbench run (5)")
    options = parser.parse_args()
    asyncio.run(run(options.runs, options.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
