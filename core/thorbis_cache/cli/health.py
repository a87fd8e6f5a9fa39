"""``thorbis-cache health``: every health check of a deployment, for people and machines.

The checks are :func:`thorbis_cache.observability.health.check`'s, the ones ``/health``
serves: Redis reachability and latency, topology (Cluster slots, Sentinel master,
replicas and their lag), eviction policy and memory, hit ratio (from a running
process's ``/metrics``), the invalidation queue, PostgreSQL, the outbox, dead letters,
the views' freshness and the logical capture slots. One line per check, or ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from thorbis_cache.cli import options
from thorbis_cache.errors import ConfigurationError, ThorbisCacheError

if TYPE_CHECKING:  # imported when the command runs, not at CLI start
    from thorbis_cache.observability.health import HealthReport
    from thorbis_cache.plugins.declarations import InvalidationRule

__all__ = ["EXIT_CANNOT_CHECK", "EXIT_CODES", "fetch_metrics", "health_command"]

#: Exit status by overall status.
EXIT_CODES = {"healthy": 0, "warning": 1, "unhealthy": 2}
#: The checks could not run: bad input (a URL, prefix, plugin) or an unreadable
#: ``--metrics-url``.
EXIT_CANNOT_CHECK = 3

_STYLE = {"healthy": "green", "warning": "yellow", "unhealthy": "red", "unknown": "dim"}
_UNKNOWN_HITS = ("unknown: a CLI process serves no reads; pass --metrics-url with a "
                 "running process's /metrics (worker --metrics-port, serve, or your app's "
                 "mount)")


def fetch_metrics(url: str, timeout: float) -> str:
    """GET a Prometheus ``/metrics`` text.

    :raises ConfigurationError: it cannot be read (naming the URL and the cause).
    """
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"--metrics-url {url!r}: expected http:// or https://")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 -- http(s) checked
            return str(reply.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise ConfigurationError(f"cannot read metrics from {url}: HTTP {exc.code}") from exc
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigurationError(f"cannot read metrics from {url}: {reason}") from exc


def health_command(
    redis_url: Annotated[str, options.REDIS_URL] = "",
    dsn: Annotated[str, typer.Option(
        "--dsn", envvar="THORBIS_POSTGRES_DSN",
        help="PostgreSQL DSN (env THORBIS_POSTGRES_DSN): adds PostgreSQL, the outbox, "
             "its dead letters, the views' freshness and the capture slots.")] = "",
    prefix: Annotated[str, options.PREFIX] = "tc",
    plugin: Annotated[list[str] | None, typer.Option(
        "--plugin", "-p", help="Plugin whose views are checked (repeatable; default: every "
                               "installed plugin).")] = None,
    metrics_url: Annotated[str, typer.Option(
        "--metrics-url", help="A running process's /metrics (e.g. "
                              "http://worker-1:9464/metrics): the hit ratio.")] = "",
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds each server gets to "
                                                         "answer.")] = 2.0,
    as_json: Annotated[bool, options.JSON] = False,
) -> None:
    """Check a deployment's health: Redis reachability and PING latency, topology
    (Cluster state and slots, Sentinel master, replicas and their lag), eviction policy
    and memory, hit ratio (from --metrics-url), invalidation queue lag and dead letters;
    with --dsn PostgreSQL, the outbox's backlog and dead letters, the views' freshness
    and the logical capture slots. Each check is healthy, warning or unhealthy with its
    reason and figures.

    Exit status: 0 healthy, 1 warning, 2 unhealthy, 3 cannot check (no or bad Redis URL,
    bad prefix, a plugin that does not load, an unreadable --metrics-url; one line on
    stderr).
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        if not redis_url:
            raise ConfigurationError("no Redis URL: pass --redis-url or set THORBIS_REDIS_URL")
        report = asyncio.run(_check(redis_url, dsn or None, prefix, plugin or None,
                                    metrics_url, timeout))
    except ThorbisCacheError as exc:
        err.print(f"[bold red]error:[/] [red]{escape(str(exc))}[/]")
        raise typer.Exit(EXIT_CANNOT_CHECK) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        out = Console(highlight=False, soft_wrap=True)
        for name, c in report.checks.items():
            out.print(f"[{_STYLE[c.status]}]{c.status:<9}[/] {name:<12} {escape(c.reason)}")
        out.print(f"[bold {_STYLE[report.status]}]{report.status}[/]")
    raise typer.Exit(EXIT_CODES[report.status])


async def _check(redis_url: str, dsn: str | None, prefix: str, plugins: list[str] | None,
                 metrics_url: str, within: float) -> HealthReport:
    from prometheus_client.parser import text_string_to_metric_families

    from thorbis_cache.mv.scheduler import ScheduledView
    from thorbis_cache.observability.health import HitCounts, check
    from thorbis_cache.observability.probe import Probe
    from thorbis_cache.store.redis_store import RedisStore

    options.checked_prefix(prefix)
    hits = None
    if metrics_url:
        text = await asyncio.to_thread(fetch_metrics, metrics_url, within)
        try:
            hits = HitCounts.from_families(text_string_to_metric_families(text))
        except ValueError as exc:
            raise ConfigurationError(f"{metrics_url} is not a Prometheus text: {exc}"
                                     ) from None
    views: list[ScheduledView] = []
    rules: list[InvalidationRule] = []
    if dsn is not None:
        from thorbis_cache.plugins.manager import PluginManager

        manager = PluginManager()
        await manager.load(plugins)
        views = [ScheduledView(p.name, v) for p in manager.plugins.values() for v in p.views]
        rules = manager.all_rules()
    async with RedisStore.from_url(redis_url, timeout=within, connect_timeout=within) as store:
        probe = Probe(store, prefix, dsn, timeout=within)
        return await check(probe, views=views, rules=rules, hits=hits,
                           hits_unknown=None if hits is not None else _UNKNOWN_HITS)
