"""``thorbis-cache demo``: the cache's main job, end to end, on real servers it starts itself.

The demo starts an ephemeral Redis and PostgreSQL, loads a deterministic multi-tenant
``customers`` table, and runs a Zipf-distributed read workload through
:meth:`Cache.get_or_load <thorbis_cache.cache.Cache.get_or_load>` with an encrypted
(``sensitive``) key schema. Then it demonstrates, against the same servers, the promises
the seed's cache-aside code did not keep:

* values are stored encrypted and bound to their key (a hex dump shows no personal data);
* a tampered entry, or one copied to another tenant's key, is a counted miss, never an
  error and never returned, and the true value is reloaded from PostgreSQL;
* a slow load that raced with an update + invalidation does not write its stale value.

Every number it prints is measured in this run; every claim is a check that can fail
(:attr:`DemoResult.ok`). The demo plays the host application, so it talks to
PostgreSQL through ``asyncpg`` itself; the cache never sees the database.

The parts: :mod:`~thorbis_cache.demo.data` (model, options, data set),
:mod:`~thorbis_cache.demo.results`, :mod:`~thorbis_cache.demo.database`,
:mod:`~thorbis_cache.demo.workload`, :mod:`~thorbis_cache.demo.scenes` and
:mod:`~thorbis_cache.demo.report`; this module runs them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated

import typer
from rich.console import Console

from thorbis_cache.cache import Cache
from thorbis_cache.crypto import KeyRing
from thorbis_cache.demo import report
from thorbis_cache.demo.data import (
    CUSTOMER,
    Customer,
    DemoOptions,
    ZipfSampler,
    generate_customers,
    popularity,
    read_plan,
)
from thorbis_cache.demo.database import Database, close_pool, create_pool
from thorbis_cache.demo.results import (
    Check,
    DemoFailure,
    DemoResult,
    EncryptionResult,
    LatencySummary,
    RaceResult,
    TamperResult,
    WorkloadResult,
)
from thorbis_cache.demo.scenes import encryption_scene, race_scene, tamper_scene
from thorbis_cache.demo.workload import run_workload
from thorbis_cache.keys import SchemaRegistry
from thorbis_cache.testing.servers import PostgresServer, RedisServer

__all__ = [
    "CUSTOMER",
    "Check",
    "Customer",
    "DemoFailure",
    "DemoOptions",
    "DemoResult",
    "EncryptionResult",
    "LatencySummary",
    "RaceResult",
    "TamperResult",
    "WorkloadResult",
    "ZipfSampler",
    "command",
    "generate_customers",
    "popularity",
    "read_plan",
    "run_demo",
]


async def run_demo(
    options: DemoOptions | None = None, *, console: Console | None = None
) -> DemoResult:
    """Run the demo end to end and return what it measured and checked.

    The servers are started here and stopped on every exit, including errors and
    cancellation (Ctrl-C).

    :param options: sizes and seed; defaults as for ``thorbis-cache demo``.
    :param console: where the report is printed as the demo goes; None prints nothing.
    :returns: the measurements and checks (see :attr:`DemoResult.ok`).
    :raises ServerBinaryNotFound: redis-server or PostgreSQL is not installed.
    :raises ServerStartError: a server did not start.
    :raises DemoFailure: a scene could not run.
    """
    options = options or DemoOptions()
    out = console or Console(quiet=True)
    tenants = options.tenant_names()
    t0 = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        redis_server = RedisServer()
        stack.callback(redis_server.stop)  # registered before start: a failed start cleans up
        postgres = PostgresServer()
        stack.callback(postgres.stop)
        with out.status("starting Redis and PostgreSQL..."):
            redis_server.start()
            postgres.start()
        redis_address = f"{redis_server.host}:{redis_server.port}"
        postgres_address = f"{postgres.host}:{postgres.port}"

        pool = await create_pool(postgres)
        stack.push_async_callback(close_pool, pool)
        db = Database(pool)
        rows = await db.load(generate_customers(options))

        registry = SchemaRegistry()
        registry.register(CUSTOMER, owner="demo")
        cache = Cache.from_url(redis_server.url, registry, keyring=KeyRing.generate())
        stack.push_async_callback(cache.aclose)
        await cache.store.ping()
        setup_s = time.perf_counter() - t0
        out.print(report.servers_panel(options, redis_server, postgres, rows, setup_s))

        hot = popularity(options)
        plan = read_plan(options, hot)
        with report.read_progress(out) as bar:
            task = bar.add_task("reads", total=len(plan))
            workload = await run_workload(
                cache,
                db,
                plan,
                options.concurrency,
                lambda done: bar.update(task, completed=done),
            )
        out.print(report.workload_panel(workload, options))

        first, second = tenants[0], tenants[1]
        encryption = await encryption_scene(cache, db, first, hot[first][0])
        out.print(report.encryption_panel(encryption))
        logs: list[str] = []
        tamper = await tamper_scene(cache, db, first, second, hot[first][0], logs)
        out.print(report.checks_panel("Tamper-proof entries", tamper.checks, logs))
        race = await race_scene(cache, db, first, hot[first][-1])
        out.print(
            report.checks_panel("Stale fill after an invalidation is rejected", race.checks, [])
        )
    result = DemoResult(
        options, redis_address, postgres_address, rows, setup_s,
        workload, encryption, tamper, race,
    )  # fmt: skip
    out.print(report.summary_line(result, time.perf_counter() - t0))
    return result


def command(
    tenants: Annotated[int, typer.Option(help="Number of tenants (at least 2).")] = 3,
    customers: Annotated[int, typer.Option(help="Customers per tenant.")] = 1000,
    reads: Annotated[int, typer.Option(help="get_or_load calls in the workload.")] = 20000,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of customer popularity.")] = 1.1,
    seed: Annotated[int, typer.Option(help="Seed of the data set and the workload.")] = 7,
    concurrency: Annotated[int, typer.Option(help="Concurrent readers.")] = 32,
) -> None:
    """Run the cache end to end on ephemeral Redis and PostgreSQL servers.

    Loads a multi-tenant customers table, runs a Zipf read workload through an
    encrypted cache, then shows tamper detection and stale-fill prevention.
    \f
    (click shows the help text up to the form feed above; the rest is for readers.)

    :param tenants: see :class:`DemoOptions` for this and the other options.
    :param customers: customers per tenant.
    :param reads: ``get_or_load`` calls of the workload.
    :param zipf: Zipf exponent of customer popularity.
    :param seed: seed of the data set and the workload.
    :param concurrency: concurrent readers.
    :raises ConfigurationError: an option is out of range.
    :raises DemoFailure: a check failed (the report shows which).
    """
    options = DemoOptions(tenants, customers, reads, zipf, seed, concurrency)
    result = asyncio.run(run_demo(options, console=Console(highlight=False)))
    if not result.ok:
        failed = [c.name for c in result.checks if not c.passed]
        raise DemoFailure(f"{len(failed)} demo check(s) failed: {'; '.join(failed)}")
