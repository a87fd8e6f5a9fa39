"""What a ``db init`` with nothing to change costs the host's writes, per capture.

    .venv/bin/python bench/setup_rerun.py                 # about 1 minute
    .venv/bin/python bench/setup_rerun.py --seconds 10 --json rerun.json

Every deploy runs ``db init``, and every application instance starting with
``apply_sql=True`` runs the same setup (:func:`thorbis_cache.postgres.setup.setup_database`).
Most of those runs find nothing to change. On a private PostgreSQL with home_services set
up (2,000 customers), per capture (``triggers``, ``logical``):

* **anchor**: 2 writers (asyncpg, one connection each) update a random customer's phone
  by primary key in a loop for ``--seconds``; the latency of each UPDATE;
* **re-runs**: the same writers while the setup runs again and again, back to back, for
  as long, in a process of its own (as a release job or another instance would); the
  writers' latency, the number of re-runs and their median time. The ratios printed are
  re-runs / anchor, of p99 and of the longest write (on 2 cores the re-runs' CPU alone
  raises the writers' p99; the longest write shows a lock the writers waited for);
* **beside a batch job**: a host transaction holds an UPDATE of one customer open
  while the setup runs once more with one lock attempt
  (``ddl_locks.LOCK_ATTEMPTS = 1``): whether it completes, or what stopped it and after
  how long (an application instance that cannot start while a batch job runs).

Run it on two commits (``PYTHONPATH=<worktree>/core``) to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres import ddl_locks
from thorbis_cache.postgres.setup import setup_database
from thorbis_cache.testing.servers import PostgresServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Sibling script modules, found through the line above: the capture benchmark's rows.
from capture import CUSTOMERS_SQL
from ha import machine

CUSTOMERS = 2_000
TENANT = "acme"
WRITERS = 2
UPDATE_SQL = "UPDATE hs.customers SET phone = $3 WHERE tenant_id = $1 AND id = $2"


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _write(dsn: str, until: float, out: list[float]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(UPDATE_SQL)
        while time.monotonic() < until:
            started = time.perf_counter()
            await statement.fetch(TENANT, random.randint(2, CUSTOMERS),
                                  f"p{random.random()}")
            out.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()


def _figures(latencies: list[float]) -> dict[str, float]:
    return {"writes": len(latencies), "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99), "max_ms": max(latencies)}


async def _rerun_loop(dsn: str, capture: str, slot: str, seconds: float) -> None:
    """The setup, back to back for ``seconds`` (in the process ``--rerun-loop`` starts);
    prints the time of each run (ms) as a JSON list."""
    manager = PluginManager()
    await manager.load(["home_services"])
    until = time.monotonic() + seconds
    reruns: list[float] = []
    while time.monotonic() < until:
        started = time.perf_counter()
        await setup_database(dsn, manager, capture=capture, slot=slot)  # type: ignore[arg-type]
        reruns.append((time.perf_counter() - started) * 1000)
    print(json.dumps(reruns))


async def _writes(dsn: str, seconds: float, capture: str | None, slot: str) -> dict[str, Any]:
    """The writers for ``seconds``; with ``capture``, the setup re-run meanwhile in a
    process of its own."""
    until = time.monotonic() + seconds
    latencies: list[float] = []
    writers = [asyncio.ensure_future(_write(dsn, until, latencies)) for _ in range(WRITERS)]
    reruns: list[float] = []
    if capture is not None:
        loop = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--rerun-loop", dsn, capture, slot, str(seconds),
            stdout=asyncio.subprocess.PIPE)
        out, _ = await loop.communicate()
        if loop.returncode:
            raise RuntimeError(f"the re-run loop failed (exit {loop.returncode})")
        reruns = json.loads(out.decode().strip().splitlines()[-1])
    await asyncio.gather(*writers)
    figures: dict[str, Any] = _figures(latencies)
    if reruns:
        figures |= {"reruns": len(reruns), "rerun_p50_ms": statistics.median(reruns)}
    return figures


async def _beside_a_batch_job(dsn: str, manager: PluginManager, capture: str,
                              slot: str) -> dict[str, Any]:
    job = await asyncpg.connect(dsn)
    attempts = ddl_locks.LOCK_ATTEMPTS
    ddl_locks.LOCK_ATTEMPTS = 1
    started = time.perf_counter()
    try:
        async with job.transaction():
            await job.execute(UPDATE_SQL, TENANT, 1, "batch job")
            try:
                await setup_database(dsn, manager, capture=capture, slot=slot)  # type: ignore[arg-type]
                outcome = "completed"
            except ddl_locks.TableLockedError as exc:
                outcome = f"TableLockedError: {str(exc).split(':')[0]}"
    finally:
        ddl_locks.LOCK_ATTEMPTS = attempts
        await job.close()
    return {"outcome": outcome, "seconds": time.perf_counter() - started}


async def run(seconds: float) -> dict[str, Any]:
    manager = PluginManager()
    await manager.load(["home_services"])
    report: dict[str, Any] = {}
    with PostgresServer() as server:
        dsn = server.dsn()
        for capture in ("triggers", "logical"):
            slot = f"rerun_{capture}"
            conn = await asyncpg.connect(dsn)
            try:
                await setup_database(dsn, manager, capture=capture, slot=slot)  # type: ignore[arg-type]
                await conn.execute("TRUNCATE hs.customers CASCADE")
                await conn.execute(CUSTOMERS_SQL, TENANT, CUSTOMERS)
                anchor = await _writes(dsn, seconds, None, slot)
                rerun = await _writes(dsn, seconds, capture, slot)
                batch = await _beside_a_batch_job(dsn, manager, capture, slot)
                if capture == "logical":
                    await conn.execute("SELECT pg_drop_replication_slot($1)",
                                       f"thorbis_{slot}")
            finally:
                await conn.close()
            report[capture] = {"anchor": anchor, "reruns": rerun, "batch_job": batch}
            print(f"\n{capture}:")
            for name, row in (("anchor", anchor), ("re-runs", rerun)):
                print(f"    {name:<8} {row['writes']:>7,} writes  p50 {row['p50_ms']:6.2f} ms"
                      f"  p99 {row['p99_ms']:6.2f} ms  max {row['max_ms']:7.2f} ms"
                      + (f"  ({row['reruns']} re-runs, {row['rerun_p50_ms']:.0f} ms each)"
                         if "reruns" in row else ""))
            print(f"    ratio    p99 {rerun['p99_ms'] / anchor['p99_ms']:.2f}x  "
                  f"max {rerun['max_ms'] / anchor['max_ms']:.2f}x")
            print(f"    beside a batch job: {batch['outcome']} in {batch['seconds']:.2f} s")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds of each writers' run (5)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--rerun-loop", nargs=4, metavar=("DSN", "CAPTURE", "SLOT", "SECONDS"),
                        help=argparse.SUPPRESS)  # the re-runs' own process
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.rerun_loop:
        dsn, capture, slot, seconds = args.rerun_loop
        asyncio.run(_rerun_loop(dsn, capture, slot, float(seconds)))
        return 0
    facts = machine()
    print(f"$ {facts['command']}")
    print(f"{facts['cpu_count']} cores | python {facts['python']} | commit {facts['commit']}")
    report = asyncio.run(run(args.seconds))
    if args.json:
        args.json.write_text(json.dumps({"machine": facts, **report}, indent=2) + "\n")
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
