"""``thorbis-cache serve --metrics-port N``: ``/metrics`` and ``/health`` for a
deployment's servers (Redis reachability and latency, the invalidation queue; with
``--dsn`` PostgreSQL and the outbox's backlog and dead letters), until SIGTERM or
Ctrl-C. The worker serves the same with its own figures (``worker --metrics-port``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from thorbis_cache.cli import options

__all__ = ["serve_command"]


def serve_command(
    metrics_port: Annotated[int, options.METRICS_PORT],
    redis_url: Annotated[str, options.REDIS_URL],
    dsn: Annotated[str | None, typer.Option(
        "--dsn", envvar="THORBIS_POSTGRES_DSN",
        help="PostgreSQL DSN (env THORBIS_POSTGRES_DSN): adds the outbox's backlog and "
             "dead letters, and PostgreSQL to /health.")] = None,
    metrics_host: Annotated[str, options.METRICS_HOST] = "127.0.0.1",
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
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.cache.registry import SchemaRegistry
    from thorbis_cache.cache.settings import CacheSettings
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
