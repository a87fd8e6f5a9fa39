"""DB commit -> cache key gone latency through the outbox worker (LISTEN path).

Starts a private PostgreSQL and Redis, runs ``thorbis-cache db init`` (core schema,
home_services tables, capture triggers), starts ``thorbis-cache worker`` as a separate
process with a 5 s polling interval (so every figure below comes from the NOTIFY
wake-up, not from polling), then N times: cache a customer hash, commit an UPDATE of the
customer's phone, and poll Redis until the key is gone. Latency = key observed gone -
UPDATE acknowledged (the commit). Prints p50/p90/p99/max; no assertion (SPEC target:
p50 < 5 ms, p99 < 20 ms).

    .venv/bin/python bench/invalidation_latency.py [-n 500]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from thorbis_home_services.models import AccountStatus, Customer, CustomerType, PaymentStatus
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import Cache, KeyRing
from thorbis_cache.plugins import PluginManager
from thorbis_cache.postgres import apply_plugin_sql
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.testing.servers import PostgresServer, RedisServer

CLI = str(Path(sys.executable).with_name("thorbis-cache"))
NOW = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def _customer(cid: int) -> Customer:
    return Customer(cid, "Ada", "Lovelace", "ada@example.com", "555-0100",
                    CustomerType.RESIDENTIAL, AccountStatus.ACTIVE, PaymentStatus.CURRENT,
                    None, "", "", "", -97.7, 30.2, NOW, NOW)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _setup(dsn: str) -> PluginManager:
    """``db init`` for home_services, and one customer row."""
    manager = PluginManager()
    await manager.load(["home_services"])
    await migrate(dsn)
    await apply_plugin_sql(dsn, list(manager.plugins.values()))
    conn = await asyncpg.connect(dsn)
    await install_triggers(conn, manager.all_rules())
    await conn.execute(
        "INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, "
        "customer_type, account_status, payment_status, longitude, latitude) "
        "VALUES ('acme', 1, 'Ada', 'Lovelace', 'a@x', '1', 'residential', 'active', "
        "'current', 0, 0)")
    await conn.close()
    return manager


async def _measure(dsn: str, redis_url: str, manager: PluginManager, n: int) -> list[float]:
    conn = await asyncpg.connect(dsn)
    cache = Cache.from_url(redis_url, manager.registry, keyring=KeyRing.generate())
    raw = aioredis.from_url(redis_url)
    key = CUSTOMER.key("acme", customer_id=1)
    name = cache.redis_key(key)
    latencies: list[float] = []
    try:
        await asyncio.sleep(2.0)  # worker start-up (imports, plugin load, LISTEN)
        for i in range(n + 20):  # the first 20 warm up
            await cache.hash(key).replace(_customer(1))
            await conn.execute("UPDATE hs.customers SET phone = $1 WHERE id = 1", str(i))
            committed = time.perf_counter()
            while await raw.exists(name):
                if time.perf_counter() - committed > 10:
                    raise RuntimeError("key not invalidated within 10 s: is the worker up?")
            if i >= 20:
                latencies.append((time.perf_counter() - committed) * 1000)
    finally:
        await raw.aclose()
        await cache.aclose()
        await conn.close()
    return latencies


def main() -> None:
    """Run the benchmark and print the percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="measured updates (default 500)")
    args = parser.parse_args()
    postgres = PostgresServer().start()
    redis_server = RedisServer().start()
    dsn, url = postgres.dsn(), redis_server.url
    try:
        manager = asyncio.run(_setup(dsn))
        # The worker is its own process, as in production: the measuring loop here never
        # competes with it for the event loop.
        worker = subprocess.Popen(
            [CLI, "worker", "--dsn", dsn, "--redis-url", url, "--plugin", "home_services",
             "--poll-interval", "5"], env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stdout=subprocess.DEVNULL)
        try:
            latencies = asyncio.run(_measure(dsn, url, manager, args.n))
        finally:
            worker.terminate()
            worker.wait(10)
    finally:
        redis_server.stop()
        postgres.stop()
    print(f"commit -> key gone through the outbox worker (LISTEN), {len(latencies)} updates:")
    print(f"  p50 {_pct(latencies, 0.50):.2f} ms   p90 {_pct(latencies, 0.90):.2f} ms   "
          f"p99 {_pct(latencies, 0.99):.2f} ms   max {max(latencies):.2f} ms   "
          f"mean {statistics.fmean(latencies):.2f} ms")


if __name__ == "__main__":
    main()
