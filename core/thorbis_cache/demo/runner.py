"""The demo run, step by step: servers, plugin, data, then each scene and its panel.

Imported by :func:`thorbis_cache.demo.run_demo` only once the home_services plugin is
known to be installed: this module and the scene modules import it.
"""

from __future__ import annotations

import contextlib
import time
from importlib.metadata import entry_points

from rich.console import Console

from thorbis_cache.app import CacheApp
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.demo import report
from thorbis_cache.demo.data import DemoOptions, popularity, read_plan
from thorbis_cache.demo.database import Database, close_pool, create_database, create_pool
from thorbis_cache.demo.outbox_scene import outbox_scene
from thorbis_cache.demo.protocol import find_demo
from thorbis_cache.demo.results import DataResult, DemoFailure, DemoResult, PluginResult
from thorbis_cache.demo.scenes import encryption_scene, race_scene, tamper_scene
from thorbis_cache.demo.vertical import PLUGIN, plugin_scene
from thorbis_cache.demo.verticals_scene import verticals_scene
from thorbis_cache.demo.workload import run_workload
from thorbis_cache.plugins.manager import ENTRY_POINT_GROUP
from thorbis_cache.testing.servers import PostgresServer, RedisServer

__all__ = ["run"]


def _race_target(plugin: PluginResult) -> int:
    """The work order the stale-fill scene updates: the last one on the board shown (an
    open order, whose priority still matters), else the customer's last service."""
    if plugin.board:
        return plugin.board[-1].work_order_id
    if plugin.history:
        return plugin.history[-1][0]
    raise DemoFailure(
        f"tenant {plugin.tenant!r} has no open work order and customer "
        f"{plugin.customer_id} no service history: run with more --customers"
    )


async def run(options: DemoOptions, out: Console) -> DemoResult:
    """Run the demo end to end (see :func:`thorbis_cache.demo.run_demo`)."""
    tenants = options.tenant_names()
    first, second = tenants[0], tenants[1]
    t0 = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        redis_server = RedisServer()
        stack.callback(redis_server.stop)  # registered before start: a failed start cleans up
        postgres = PostgresServer()
        stack.callback(postgres.stop)
        with out.status("starting Redis and PostgreSQL..."):
            redis_server.start()
            postgres.start()
        dsn = await create_database(postgres)

        app = CacheApp(redis_server.url, keyring=KeyRing.generate(), postgres_dsn=dsn)
        stack.push_async_callback(app.aclose)
        # Every installed vertical that ships a demo part (home_services first).
        verticals = [PLUGIN] + [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)
                                if ep.name != PLUGIN and find_demo(ep.name) is not None]
        with out.status(f"loading plugins {', '.join(verticals)} and applying their SQL..."):
            t1 = time.perf_counter()
            await app.start(plugins=verticals, apply_sql=True)
            start_s = time.perf_counter() - t1
        pool = await create_pool(dsn)
        stack.push_async_callback(close_pool, pool)
        db = Database(pool)
        with out.status("generating and loading the data set..."):
            t1 = time.perf_counter()
            rows = await db.load(tenants, options.customers, options.seed)
            load_s = time.perf_counter() - t1
            views = app.plugins.plugins[PLUGIN].views
            t1 = time.perf_counter()
            await db.refresh(views)
            refresh_s = time.perf_counter() - t1
        data = DataResult(tuple(tenants), rows, load_s, tuple(v.name for v in views), refresh_s)
        cache = app.cache
        await cache.store.ping()
        setup_s = time.perf_counter() - t0
        out.print(report.servers_panel(options, redis_server, postgres, data, setup_s))

        hot = popularity(options)
        plugin = await plugin_scene(app, db, first, hot[first], start_s)
        out.print(report.plugin_panel(plugin))

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

        encryption = await encryption_scene(cache, db, first, hot[first][0])
        out.print(report.encryption_panel(encryption))
        logs: list[str] = []
        tamper = await tamper_scene(cache, db, first, second, hot[first][0], logs)
        out.print(report.checks_panel("Tamper-proof entries", tamper.checks, logs))
        race = await race_scene(cache, db, first, _race_target(plugin))
        out.print(
            report.checks_panel(
                f"Stale fill after an invalidation is rejected (work order {race.work_order_id})",
                race.checks,
                [],
            )
        )
        outbox = await outbox_scene(app, db, dsn, first, hot[first][0])
        out.print(
            report.checks_panel(
                f"An UPDATE in PostgreSQL invalidates the cache (customer {outbox.customer_id})",
                outbox.checks,
                [],
            )
        )
        with out.status("every vertical...") as status:
            everyone = await verticals_scene(app, pool, dsn, options, status.update)
        out.print(report.verticals_panel(everyone, options))
    result = DemoResult(
        options, f"{redis_server.host}:{redis_server.port}",
        f"{postgres.host}:{postgres.port}", setup_s, data, plugin,
        workload, encryption, tamper, race, outbox, everyone,
    )  # fmt: skip
    out.print(report.summary_line(result, time.perf_counter() - t0))
    return result
