"""Two ``thorbis-cache worker`` processes on one logical capture slot: how long the one
standing by takes to read the slot once the other stops, and to apply a change
committed at that moment.

A primary and Redis of their own (the test kit's launchers), home_services under
logical capture. One worker runs; a second starts and stands by; the first gets SIGTERM
or SIGKILL (alternately, ``--handovers`` times in all), and a one-row UPDATE commits at
once. Printed per signal: milliseconds from the signal until the standby's replication
session reads the slot (``pg_stat_replication`` names its process), and until the slot
is confirmed past the UPDATE (the change applied). Each handover's standby is the next
one's active worker.

    .venv/bin/python bench/worker_takeover.py [--handovers 6] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from core_testing import CUSTOMER_SQL  # noqa: E402

from thorbis_cache.testing.servers import RedisServer  # noqa: E402
from thorbis_cache.testing.servers.postgres_server import PostgresServer  # noqa: E402

CLI = str(Path(sys.executable).with_name("thorbis-cache"))
_READER = ("SELECT r.application_name FROM pg_replication_slots s "
           "JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1")


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([CLI, "worker", "--plugin", "home_services", "--no-mv",
                             "--no-queue"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


async def _until(check: object, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {within} s waiting until {what}")
        await asyncio.sleep(0.002)


async def run(handovers: int) -> dict[str, list[tuple[float, float]]]:
    """The figures: per signal name, (ms until the slot is read, ms until applied)."""
    figures: dict[str, list[tuple[float, float]]] = {"SIGTERM": [], "SIGKILL": []}
    with PostgresServer() as pg, RedisServer() as redis_server:
        env = dict(os.environ, THORBIS_POSTGRES_DSN=pg.dsn(),
                   THORBIS_REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0")
        await asyncio.to_thread(subprocess.run, [CLI, "db", "init", "--plugin",
                                "home_services", "--capture", "logical"],
                                env=env, check=True, capture_output=True)
        conn = await asyncpg.connect(pg.dsn(), server_settings={"synchronous_commit": "on"})
        try:
            await conn.execute(CUSTOMER_SQL, "acme", 1)

            async def read_by(proc: subprocess.Popen[bytes]) -> bool:
                name = await conn.fetchval(_READER, "thorbis_main")
                return name is not None and name.endswith(f":{proc.pid}")

            active = _worker(env)
            await _until(lambda: read_by(active), "the first worker reads the slot")
            for n in range(handovers):
                standby = _worker(env)
                await asyncio.sleep(3)  # started, and standing by
                sig = signal.SIGTERM if n % 2 == 0 else signal.SIGKILL
                started = time.monotonic()
                active.send_signal(sig)
                await conn.execute("UPDATE hs.customers SET phone = $1 WHERE id = 1",
                                   f"p{n}")
                lsn = await conn.fetchval("SELECT pg_current_wal_lsn()")
                await _until(lambda s=standby: read_by(s), "the standby reads the slot")
                reading = time.monotonic()

                async def applied(lsn: object = lsn) -> bool:
                    return bool(await conn.fetchval(
                        "SELECT confirmed_flush_lsn >= $1 FROM pg_replication_slots "
                        "WHERE slot_name = 'thorbis_main'", lsn))

                await _until(applied, "the change is applied")
                done = time.monotonic()
                await asyncio.to_thread(active.wait, 10)
                figures[sig.name].append(((reading - started) * 1000,
                                          (done - started) * 1000))
                active = standby
            active.send_signal(signal.SIGTERM)
            await asyncio.to_thread(active.wait, 20)
        finally:
            await conn.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handovers", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(run(args.handovers))
    for name, rows in figures.items():
        if not rows:
            continue
        reads = [round(r) for r, _ in rows]
        applied = [round(a) for _, a in rows]
        print(f"{name}: slot read after {reads} ms (median {statistics.median(reads):.0f}), "
              f"change applied after {applied} ms (median {statistics.median(applied):.0f})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
