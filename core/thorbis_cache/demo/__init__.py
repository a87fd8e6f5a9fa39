"""``thorbis-cache demo``: the cache's main job, end to end, on real servers it starts itself.

The demo plays a host application of the home_services vertical. It starts an ephemeral
Redis and PostgreSQL, loads the ``home_services`` plugin through
:class:`~thorbis_cache.app.CacheApp` (which applies the plugin's tables and materialized
views), fills them with the plugin's deterministic data for the demo tenants and
refreshes the views. It shows what the plugin declared and runs two of its patterns,
then runs a Zipf-distributed read workload through
:meth:`Cache.get_or_load <thorbis_cache.cache.core.Cache.get_or_load>` on the plugin's
encrypted ``hs.customer_summary`` schema with the plugin's own loader. Then it
demonstrates, against the same servers, the promises the seed's cache-aside code did not
keep:

* values are stored encrypted and bound to their key (a hex dump shows no personal data);
* a tampered entry, or one copied to another tenant's key, is a counted miss, never an
  error and never returned, and the true value is reloaded from PostgreSQL;
* a slow load that raced with an update + invalidation does not write its stale value;
* an UPDATE committed in PostgreSQL removes the cached entries by itself: the capture
  triggers write the outbox, the outbox worker (run in the demo process) deletes the keys,
  and the next read loads the new row.

It closes with every installed vertical that ships a demo part
(:mod:`~thorbis_cache.demo.protocol`; home_services, automotive and restaurant here) for
tenants that each run all of them: data written in PostgreSQL, views refreshed by the
scheduler, concurrent cached reads, changes applied by the worker and read back, and a
summary table per vertical (:mod:`~thorbis_cache.demo.verticals_scene`).

Every number it prints is measured in this run; every claim is a check that can fail
(:attr:`DemoResult.ok`). The demo plays the host application, so it talks to
PostgreSQL through ``asyncpg`` itself; the cache never sees the database.

The parts: :mod:`~thorbis_cache.demo.data` (options, read plan),
:mod:`~thorbis_cache.demo.results`, :mod:`~thorbis_cache.demo.database`,
:mod:`~thorbis_cache.demo.vertical` (the plugin scene),
:mod:`~thorbis_cache.demo.workload`, :mod:`~thorbis_cache.demo.scenes`,
:mod:`~thorbis_cache.demo.outbox_scene`,
:mod:`~thorbis_cache.demo.report` and :mod:`~thorbis_cache.demo.runner`, which runs them
in order. Only ``data`` and ``results`` are imported with this package: the others need
the plugin, so ``thorbis-cache`` itself starts without it.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points
from typing import Annotated

import typer
from rich.console import Console

from thorbis_cache.demo.data import DemoOptions, ZipfSampler, popularity, read_plan
from thorbis_cache.demo.results import (
    Check,
    DataResult,
    DemoFailure,
    DemoResult,
    EncryptionResult,
    LatencySummary,
    OutboxResult,
    PluginResult,
    RaceResult,
    TamperResult,
    WorkloadResult,
)
from thorbis_cache.errors import ConfigurationError

__all__ = [
    "PLUGIN",
    "Check",
    "DataResult",
    "DemoFailure",
    "DemoOptions",
    "DemoResult",
    "EncryptionResult",
    "LatencySummary",
    "OutboxResult",
    "PluginResult",
    "RaceResult",
    "TamperResult",
    "WorkloadResult",
    "ZipfSampler",
    "command",
    "popularity",
    "read_plan",
    "require_plugin",
    "run_demo",
]

#: The entry-point name of the plugin the demo runs on.
PLUGIN = "home_services"
_INSTALL = "pip install -e plugins/home_services"


def require_plugin() -> None:
    """Check that the home_services plugin is installed, before any server starts.

    :raises ConfigurationError: it is not (one line, with the command that installs it).
    """
    from thorbis_cache.plugins.manager import ENTRY_POINT_GROUP  # pluggy: not for --help

    missing = (
        f"the demo needs the {PLUGIN!r} plugin (entry point {PLUGIN!r} of group "
        f"{ENTRY_POINT_GROUP!r}, distribution thorbis-home-services), which is not installed"
    )
    if not entry_points(group=ENTRY_POINT_GROUP, name=PLUGIN):
        raise ConfigurationError(f"{missing}; install it with `{_INSTALL}`")
    try:
        import thorbis_home_services  # noqa: F401
    except ImportError as exc:  # an entry point left behind by a removed distribution
        raise ConfigurationError(f"{missing} ({exc}); install it with `{_INSTALL}`") from exc


async def run_demo(
    options: DemoOptions | None = None, *, console: Console | None = None
) -> DemoResult:
    """Run the demo end to end and return what it measured and checked.

    The servers are started here and stopped on every exit, including errors and
    cancellation (Ctrl-C).

    :param options: sizes and seed; defaults as for ``thorbis-cache demo``.
    :param console: where the report is printed as the demo goes; None prints nothing.
    :returns: the measurements and checks (see :attr:`DemoResult.ok`).
    :raises ConfigurationError: the home_services plugin is not installed.
    :raises PluginLoadError: it is installed but does not load, or its SQL does not apply.
    :raises ServerBinaryNotFound: redis-server or PostgreSQL is not installed.
    :raises ServerStartError: a server did not start.
    :raises DemoFailure: a scene could not run.
    """
    require_plugin()
    from thorbis_cache.demo import runner  # needs the plugin: imported once it is known

    return await runner.run(options or DemoOptions(), console or Console(quiet=True))


def command(
    tenants: Annotated[int, typer.Option(help="Number of tenants (at least 2).")] = 3,
    customers: Annotated[int, typer.Option(help="Customers per tenant.")] = 1000,
    reads: Annotated[int, typer.Option(help="get_or_load calls in the workload.")] = 20000,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of customer popularity.")] = 1.1,
    seed: Annotated[int, typer.Option(help="Seed of the data set and the workload.")] = 7,
    concurrency: Annotated[int, typer.Option(help="Concurrent readers.")] = 32,
    vertical_reads: Annotated[int, typer.Option(
        help="Reads per vertical in the closing every-vertical scene.")] = 3000,
) -> None:
    """Run the cache end to end on ephemeral Redis and PostgreSQL servers.

    Loads the home_services plugin and its multi-tenant data, runs two of its patterns
    and a Zipf read workload through an encrypted cache, then shows tamper detection,
    stale-fill prevention and an UPDATE in PostgreSQL invalidating the cache; closes with
    every installed vertical (home services, automotive, restaurant) for several tenants:
    writes, cached reads, invalidation by the worker, view refreshes, a summary table.
    Needs the home_services plugin (pip install -e plugins/home_services).
    \f
    (click shows the help text up to the form feed above; the rest is for readers.)

    :param tenants: see :class:`DemoOptions` for this and the other options.
    :param customers: customers per tenant.
    :param reads: ``get_or_load`` calls of the workload.
    :param zipf: Zipf exponent of customer popularity.
    :param seed: seed of the data set and the workload.
    :param concurrency: concurrent readers.
    :param vertical_reads: reads per vertical in the every-vertical scene.
    :raises ConfigurationError: an option is out of range, or the plugin is missing.
    :raises DemoFailure: a check failed (the report shows which).
    """
    options = DemoOptions(tenants, customers, reads, zipf, seed, concurrency, vertical_reads)
    result = asyncio.run(run_demo(options, console=Console(highlight=False)))
    if not result.ok:
        failed = [c.name for c in result.checks if not c.passed]
        raise DemoFailure(f"{len(failed)} demo check(s) failed: {'; '.join(failed)}")
