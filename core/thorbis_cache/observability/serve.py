"""Serving ``/metrics`` and ``/health`` from the command line.

* ``thorbis-cache serve --metrics-port N``: a standalone endpoint for a deployment's
  servers (Redis reachability and latency, the invalidation queue, the outbox's
  backlog and dead letters with ``--dsn``), until SIGTERM or Ctrl-C.
* ``thorbis-cache worker --metrics-port N``: the same endpoint inside the worker
  process, with the worker's, queue consumer's and view scheduler's figures
  (:func:`worker_endpoint`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from thorbis_cache.cache import Cache
    from thorbis_cache.invalidation.queue import InvalidationQueue, Invalidator
    from thorbis_cache.observability.http import HttpServer
    from thorbis_cache.observability.views import MvRefreshMetrics
    from thorbis_cache.postgres.mv_scheduler import ScheduledView
    from thorbis_cache.worker import OutboxWorker

__all__ = ["METRICS_HOST", "METRICS_PORT", "serve_command", "worker_endpoint"]

#: Option of the port (``worker --metrics-port`` and ``serve --metrics-port``).
METRICS_PORT = typer.Option(
    "--metrics-port", min=0, max=65535,
    help="Serve /metrics (Prometheus) and /health (JSON) on this port.")
#: Option of the address listened on.
METRICS_HOST = typer.Option(
    "--metrics-host", help="Address the metrics endpoint listens on (0.0.0.0: every "
    "interface, for a Prometheus on another machine).")


def serve_command(
    metrics_port: Annotated[int, METRICS_PORT],
    redis_url: Annotated[str, typer.Option("--redis-url", envvar="THORBIS_REDIS_URL",
                                           help="Redis URL (env THORBIS_REDIS_URL).")],
    dsn: Annotated[str | None, typer.Option(
        "--dsn", envvar="THORBIS_POSTGRES_DSN",
        help="PostgreSQL DSN (env THORBIS_POSTGRES_DSN): adds the outbox's backlog and "
             "dead letters, and PostgreSQL to /health.")] = None,
    metrics_host: Annotated[str, METRICS_HOST] = "127.0.0.1",
    prefix: Annotated[str, typer.Option(
        "--prefix", help="The cache's key prefix (CacheSettings.prefix), where its "
                         "invalidation queue lives.")] = "tc",
) -> None:
    """Serve /metrics and /health for a deployment's servers (Redis reachability and
    latency, invalidation queue depth and dead letters; with --dsn, PostgreSQL and the
    outbox's backlog and dead letters) until SIGTERM or Ctrl-C."""
    asyncio.run(_serve(metrics_port, redis_url, dsn, metrics_host, prefix))


async def _serve(port: int, redis_url: str, dsn: str | None, host: str,
                 prefix: str = "tc") -> None:
    from thorbis_cache.cache import Cache
    from thorbis_cache.config import CacheSettings
    from thorbis_cache.keys import SchemaRegistry
    from thorbis_cache.observability.asgi import MetricsApp
    from thorbis_cache.observability.exporter import Exporter
    from thorbis_cache.observability.http import HttpServer

    settings = CacheSettings(prefix=prefix)  # a bad prefix: InvalidKeyError, one line
    async with Cache.from_url(redis_url, SchemaRegistry(), settings=settings) as cache:
        exporter = Exporter(cache, dsn=dsn, operations=False)
        async with HttpServer(MetricsApp(exporter), host, port) as server:
            typer.echo(f"serving /metrics and /health on {server.url}; Ctrl-C or SIGTERM "
                       "stops")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    typer.echo("metrics endpoint stopped")


async def worker_endpoint(cache: Cache, dsn: str, worker: OutboxWorker,
                          queue: InvalidationQueue, handler: Invalidator,
                          views: MvRefreshMetrics, *, port: int, host: str = "127.0.0.1",
                          scheduled: Sequence[ScheduledView] = ()
                          ) -> tuple[HttpServer, Invalidator]:
    """Start the worker process's endpoint: the cache's counters, the worker's, the
    queue consumer's (its jobs counted through the returned handler) and the view
    scheduler's, the outbox and the queue's backlogs.

    :param scheduled: the views the scheduler refreshes, whose freshness ``/health``
        reports.
    :returns: the started server (close it with ``aclose``) and the handler the queue
        must consume with.
    :raises ConfigurationError: the port cannot be bound.
    """
    from thorbis_cache.observability.asgi import MetricsApp
    from thorbis_cache.observability.exporter import Exporter
    from thorbis_cache.observability.http import HttpServer

    exporter = Exporter(cache, dsn=dsn, operations=False)
    exporter.add_worker(worker)
    counting = exporter.add_queue(queue, handler)
    exporter.add_views(views)
    server = await HttpServer(MetricsApp(exporter, views=scheduled), host, port).start()
    return server, counting
