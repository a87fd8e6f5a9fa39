"""``thorbis-cache refresh [VIEW ...] [--all]`` and ``thorbis-cache mv status``.

* ``refresh``: refresh the named materialized views (or every view of the loaded plugins
  with ``--all``) one after the other in dependency order, with a progress bar, then
  invalidate each refreshed view's cache tags for its tenants. A failing view does not
  stop the others; the command exits 1 when any failed. A view being refreshed elsewhere
  is reported as skipped.
* ``mv status``: each view of the loaded plugins: health (ok, stale, failing, never), age
  of its data, last refresh duration, next run (cron, or the end of a failure backoff),
  changes pending since its last refresh (against the smart threshold), failures.
"""

from __future__ import annotations

import asyncio
import enum
import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from thorbis_cache.cli import options
from thorbis_cache.cli.dsn import check_postgres
from thorbis_cache.errors import ConfigurationError

if TYPE_CHECKING:
    from thorbis_cache.plugins.declarations import MaterializedView

__all__ = ["MvAction", "mv_command", "refresh_command"]

_NOT_MIGRATED = ("thorbis.mv_refresh_history or thorbis.mv_state does not exist: run "
                 "`thorbis-cache db migrate` first")
_STYLE = {"ok": "green", "failed": "red", "skipped_locked": "yellow"}


class MvAction(enum.Enum):
    """What ``mv`` does."""

    status = "status"


def refresh_command(
    views: Annotated[list[str] | None, typer.Argument(
        help="Views to refresh (qualified names, e.g. hs.customer_summary).")] = None,
    dsn: Annotated[str, options.DSN] = "",
    redis_url: Annotated[str, options.REDIS_URL] = "",
    all_views: Annotated[bool, typer.Option("--all", help="Refresh every plugin view.")] = False,
    plugin: Annotated[list[str] | None, options.PLUGINS] = None,
    statement_timeout: Annotated[float | None, typer.Option(
        min=0.001, help="Seconds one refresh may take.")] = None,
) -> None:
    """Refresh materialized views, then invalidate their cache tags; exit 1 if any failed."""
    if not dsn or not redis_url:
        raise ConfigurationError("refresh needs --dsn and --redis-url")
    if bool(views) == all_views:
        raise options.BadInput("name the views to refresh, or pass --all (not both)")
    failed = asyncio.run(_refresh(dsn, redis_url, views or [], plugin or None,
                                  statement_timeout))
    if failed:
        raise typer.Exit(1)


def _select(owned: list[tuple[str, MaterializedView]],
            names: list[str]) -> list[tuple[str, MaterializedView]]:
    if not names:
        return owned
    by_name = {view.name: (plugin, view) for plugin, view in owned}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        known = ", ".join(sorted(by_name)) or "(none)"
        raise options.BadInput(f"unknown materialized view(s) {', '.join(unknown)}; "
                               f"the loaded plugins declare: {known}")
    return [by_name[n] for n in dict.fromkeys(names)]


async def _refresh(dsn: str, redis_url: str, names: list[str], plugins: list[str] | None,
                   statement_timeout: float | None) -> int:
    from thorbis_cache.app import CacheApp
    from thorbis_cache.cache.crypto import KeyRing
    from thorbis_cache.mv.refresh import history_exists, refresh_and_invalidate
    from thorbis_cache.mv.scheduler import ScheduledView, refresh_order
    from thorbis_cache.postgres.connection import connect

    await check_postgres(dsn)
    # Invalidation only deletes keys; without a configured ring a throwaway one satisfies
    # the sensitive schemas' requirement (as for the worker).
    keyring = KeyRing.from_env() if os.environ.get("THORBIS_KEYRING") else KeyRing.generate()
    app = await CacheApp(redis_url, keyring=keyring).start(plugins)
    console = Console(highlight=False, soft_wrap=True)
    failed = 0
    try:
        owned = [(p.name, v) for p in app.plugins.plugins.values() for v in p.views]
        # Views that others depend on first (a dependent reads its dependencies' rows).
        ordered = refresh_order([ScheduledView(p, v) for p, v in _select(owned, names)])
        todo = [(sv.plugin, sv.view) for sv in ordered]
        conn = await connect(dsn, writes="refreshing materialized views")
        try:
            if not await history_exists(conn):
                raise ConfigurationError(_NOT_MIGRATED)
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                          console=console) as progress:
                task = progress.add_task("refreshing", total=len(todo))
                for plugin_name, view in todo:
                    progress.update(task, description=f"refreshing {view.name}")
                    r = await refresh_and_invalidate(
                        app, conn, plugin_name, view, statement_timeout_s=statement_timeout)
                    style = _STYLE[r.outcome]
                    extra = (f", {r.rows} rows, {len(r.tenants)} tenant(s) invalidated"
                             if r.ok else f": {r.error}" if r.error else "")
                    mode = " concurrently" if r.concurrently else ""
                    progress.console.print(
                        f"[{style}]{r.outcome}[/] {escape(r.view)}{mode} "
                        f"({r.duration_ms:.0f} ms){escape(extra)}")
                    failed += r.outcome == "failed"
                    progress.advance(task)
        finally:
            await conn.close()
    finally:
        await app.aclose()
    console.print(f"{len(todo)} view(s): {len(todo) - failed} refreshed or skipped, "
                  f"{failed} failed")
    return failed


def mv_command(
    action: Annotated[MvAction, typer.Argument(help="status: freshness of each view.")],
    dsn: Annotated[str, options.DSN],
    plugin: Annotated[list[str] | None, options.PLUGINS] = None,
) -> None:
    """Show each materialized view's freshness: health, age, last refresh duration, next
    run, changes pending since its last refresh, failures."""
    asyncio.run(_status(dsn, plugin or None))


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


_HEALTH = {"ok": "green", "stale": "yellow", "failing": "red", "never": "yellow"}


async def _status(dsn: str, plugins: list[str] | None) -> None:
    from thorbis_cache.mv.refresh import history_exists
    from thorbis_cache.mv.scheduler import ScheduledView, report
    from thorbis_cache.plugins.manager import PluginManager
    from thorbis_cache.postgres.connection import connect

    await check_postgres(dsn)
    manager = PluginManager()
    await manager.load(plugins)
    views = [ScheduledView(p.name, v) for p in manager.plugins.values() for v in p.views]
    conn = await connect(dsn)
    try:
        if not await history_exists(conn):
            raise ConfigurationError(_NOT_MIGRATED)
        lines = await report(conn, views)
    finally:
        await conn.close()
    console = Console(highlight=False, soft_wrap=True, width=200)
    if not lines:
        console.print("the loaded plugins declare no materialized views")
        return
    table = Table("view", "plugin", "health", "age", "last duration", "next run (UTC)",
                  "pending changes", "failures", "last error")
    for line in lines:
        pending = str(line.pending) + (f"/{line.min_changes}" if line.min_changes else "")
        table.add_row(
            line.view, line.plugin, f"[{_HEALTH[line.health]}]{line.health}[/]",
            "-" if line.age_s is None else _age(line.age_s),
            "-" if line.last_duration_ms is None else f"{line.last_duration_ms:.0f} ms",
            "-" if line.next_run is None else f"{line.next_run:%Y-%m-%d %H:%M}",
            pending, str(line.failures), escape(line.last_error or ""))
    console.print(table)
