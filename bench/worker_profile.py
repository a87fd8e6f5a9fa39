"""The worker's own CPU per change, from a backlog: a report (and a profile).

    .venv/bin/python bench/worker_profile.py                       # logical, 60,000 changes
    .venv/bin/python bench/worker_profile.py --capture triggers
    .venv/bin/python bench/worker_profile.py --profile --top 30    # under cProfile
    .venv/bin/python bench/worker_profile.py --changes 20000 --per-tx 100 --runs 3
    .venv/bin/python bench/worker_profile.py --run      # the worker's loop, while writing

On a private PostgreSQL and ``redis-server`` set up as ``bench/capture.py`` does
(``capture.setup_db``: home_services, 20,000 customers in two tenants), with the
capture mode's setup (``capture.MODES``: ``logical`` or ``trigger``), each run builds a
backlog of ``--changes`` single-column UPDATEs of ``hs.customers`` (``SET phone``, by
primary key, ``--per-tx`` rows per transaction, default 1 as the 8 writers of the
latency target commit them) with the worker stopped, then drains it with
``OutboxWorker.from_app(...).drain()`` in this process and prints changes/s and this
process's CPU seconds per change (``time.process_time``: the worker's own CPU, which is
what a 2-core machine whose writers take the rest has to spare). With ``--run`` the
worker's own loop (``OutboxWorker.run``, as in production) runs while the backlog is
written, and the figures are taken from the start of the writes until it has applied
them all (its batches then hold what has arrived, as under the latency target's
writers; the changes/s are then bounded by the writes). With ``--profile`` the
drain runs under cProfile and the top entries by cumulative and by own time are printed
(the profiler's overhead inflates the figures: compare runs of the same kind).

A report, not a test: exit status 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import capture  # a sibling script module, found through the line above

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.testing.servers import PostgresServer, RedisServer

#: Commits ``n`` single-row UPDATEs, ``per_tx`` to a transaction, cycling over the
#: tenants and their customers (a procedure: transaction control inside, one round trip).
PROCEDURE = """
CREATE OR REPLACE PROCEDURE public.bench_backlog(n int, per_tx int, n_customers int, tag text,
                                                 tenants text[], significant bool)
LANGUAGE plpgsql AS $$
DECLARE
    i int := 0;
    nt int := array_length(tenants, 1);
BEGIN
    WHILE i < n LOOP
        IF significant THEN  -- a column the list rule watches: each change names a tag
            UPDATE hs.customers
               SET account_status = CASE WHEN i / nt % 2 = 0 THEN 'vip' ELSE 'active' END
             WHERE tenant_id = tenants[i % nt + 1]
               AND id = (i / nt) % n_customers + 1;
        ELSE
        UPDATE hs.customers SET phone = tag || i
         WHERE tenant_id = tenants[i % nt + 1]
           AND id = (i / nt) % n_customers + 1;
        END IF;
        i := i + 1;
        IF i % per_tx = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
    COMMIT;
END $$
"""

WORKER_MODE = {"logical": "logical", "triggers": "trigger"}
#: Customers of each tenant with ``--tenants`` above 2.
EXTRA_CUSTOMERS = 100


async def run(options: argparse.Namespace) -> None:
    mode = WORKER_MODE[options.capture]
    with PostgresServer() as server, RedisServer() as redis_server:
        dsn, url = server.dsn(), redis_server.url
        conn, manager = await capture.setup_db(dsn)
        try:
            await conn.execute(PROCEDURE)
            tenants = ["acme", "globex"]
            n_customers = capture.CUSTOMERS
            if options.tenants > 2:
                # More tenants, fewer customers each: every batch spans them all.
                n_customers = EXTRA_CUSTOMERS
                tenants += [f"t{i:04d}" for i in range(3, options.tenants + 1)]
                for tenant in tenants[2:]:
                    await conn.execute(capture.CUSTOMERS_SQL, tenant, n_customers)
                await conn.execute("ANALYZE hs.customers")
            await capture.MODES[mode](conn, manager)
            await capture.fresh(conn)
            # Flushed at commit: logical decoding reads flushed WAL only.
            await conn.execute("SET synchronous_commit = on")
            app = await CacheApp(url, keyring=KeyRing.generate()).start(["home_services"])
            worker = capture.WORKERS[mode](app, dsn)
            try:
                await worker.drain()  # connections, the stream, the capture check
                loop = asyncio.create_task(worker.run()) if options.run else None
                rates, per_change = [], []
                for r in range(options.runs):
                    profiler = cProfile.Profile() if options.profile else None
                    batches, processed = worker.metrics.batches, worker.metrics.processed
                    started = time.perf_counter()
                    if loop is not None:
                        cpu, wall = time.process_time(), started
                        if profiler is not None:
                            profiler.enable()
                    await conn.execute("CALL public.bench_backlog($1, $2, $3, $4, $5, $6)",
                                       options.changes, options.per_tx, n_customers,
                                       f"r{r}-", tenants, options.significant)
                    built = time.perf_counter() - started
                    if loop is None:
                        cpu, wall = time.process_time(), time.perf_counter()
                        if profiler is not None:
                            profiler.enable()
                        await worker.drain()
                    else:
                        while worker.metrics.processed - processed < options.changes:  # noqa: ASYNC110
                            await asyncio.sleep(0.005)  # a counter, not an event: poll it
                    if profiler is not None:
                        profiler.disable()
                    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                    applied = worker.metrics.processed - processed
                    rates.append(applied / wall)
                    per_change.append(cpu / max(applied, 1) * 1e6)
                    print(f"  run {r + 1}: {options.changes:,} changes written in {built:.1f} s;"
                          f" {applied:,} applied in {worker.metrics.batches - batches} batches:"
                          f" {wall:.2f} s, {rates[-1]:,.0f} changes/s, worker CPU {cpu:.2f} s"
                          f" = {per_change[-1]:.1f} us/change")
                    if profiler is not None:
                        for order in ("cumulative", "tottime"):
                            out = io.StringIO()
                            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(
                                options.top)
                            print(f"\n  --- by {order} ---")
                            print("\n".join(line for line in out.getvalue().splitlines()
                                            if line.strip())[:12000])
                if loop is not None:
                    worker.stop()
                    await loop
                how = " (run loop)" if options.run else ""
                print(f"{options.capture}{how}: median {statistics.median(rates):,.0f} "
                      "changes/s, "
                      f"{statistics.median(per_change):.1f} us of worker CPU per change "
                      f"({options.runs} run(s), {options.per_tx} change(s) per transaction, "
                      f"{len(tenants)} tenants"
                      f"{', tagged changes' if options.significant else ''}"
                      f"{', under cProfile' if options.profile else ''})")
            finally:
                await worker.aclose()
                await app.aclose()
        finally:
            if mode == "logical":
                await capture.MODES["none"](conn, manager)
            await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--capture", choices=sorted(WORKER_MODE), default="logical")
    parser.add_argument("--changes", type=int, default=60_000, help="backlog (60000)")
    parser.add_argument("--per-tx", type=int, default=1,
                        help="changes per transaction (1)")
    parser.add_argument("--runs", type=int, default=1, help="backlogs built and drained (1)")
    parser.add_argument("--significant", action="store_true",
                        help="update account_status (every change names a list tag), "
                        "not phone")
    parser.add_argument("--tenants", type=int, default=2,
                        help="tenants the changes cycle over (2; more: 100 customers each)")
    parser.add_argument("--run", action="store_true",
                        help="the worker's run() loop while the changes are written")
    parser.add_argument("--profile", action="store_true", help="drain under cProfile")
    parser.add_argument("--top", type=int, default=35, help="profile entries (35)")
    options = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
