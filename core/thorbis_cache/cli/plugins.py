"""``thorbis-cache plugins``: list installed plugins and what each declares.

Plugins are loaded through :class:`~thorbis_cache.plugins.manager.PluginManager`, so the listing
shows exactly what a host would get, and a broken plugin is reported the way a host's
start would report it: every problem, one red line each, exit status 1.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from thorbis_cache.errors import PluginLoadError

if TYPE_CHECKING:
    from thorbis_cache.plugins.manager import LoadedPlugin

__all__ = ["command", "describe"]

EXIT_PROBLEMS = 1

#: Listed declarations: JSON key, row title, LoadedPlugin attribute.
_COLUMNS = (
    ("schemas", "Schemas", "schemas"),
    ("patterns", "Patterns", "patterns"),
    ("materialized_views", "Materialized views", "views"),
    ("rules", "Rules", "rules"),
    ("warmers", "Warmers", "warmers"),
    ("permissions", "Permissions", "permissions"),
)


def describe(plugin: LoadedPlugin) -> dict[str, Any]:
    """A plugin as plain data: the stable shape of ``plugins --json``.

    :returns: name, distribution, version, namespace, title, description,
        hook_api_version, then the names of its schemas, patterns, materialized_views,
        sql scripts, rules, warmers and permissions (lists, in declaration order).
    """
    out: dict[str, Any] = {
        "name": plugin.name,
        "distribution": plugin.distribution,
        "version": plugin.version,
        "namespace": plugin.info.namespace,
        "title": plugin.info.title,
        "description": plugin.info.description,
        "hook_api_version": plugin.info.hook_api_version,
        "sql": [s.name for s in plugin.sql],
    }
    for key, _title, attr in _COLUMNS:
        out[key] = [d.name for d in getattr(plugin, attr)]
    return out


def _table(plugin: LoadedPlugin) -> Table:
    """One plugin: a title line (name, distribution, namespace, hook API), then one row
    per kind of declaration with its count and names (fits 80 columns)."""
    dist = "no distribution"
    if plugin.distribution:
        dist = f"{plugin.distribution} {plugin.version or ''}".strip()
    title = (f"[bold]{escape(plugin.name)}[/] ({escape(dist)}) namespace "
             f"[bold]{escape(plugin.info.namespace)}[/], hook API {plugin.info.hook_api_version}")
    table = Table(title=title, title_justify="left", show_header=False, expand=True)
    table.add_column("kind", no_wrap=True, style="bold")
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("names", ratio=1)
    if plugin.info.title or plugin.info.description:
        text = " - ".join(t for t in (plugin.info.title, plugin.info.description) if t)
        table.add_row("about", "", escape(text))
    for _key, kind, attr in _COLUMNS:
        names = [d.name for d in getattr(plugin, attr)]
        table.add_row(kind, str(len(names)), escape(", ".join(names)))
    return table


def command(
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", "-p", help="Load only this plugin (repeatable)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON.")
    ] = False,
) -> None:
    """List installed plugins: version, namespace, schemas, patterns, MVs, rules,
    warmers, permissions.
    \f
    :param plugin: names of the plugins to load (default: every installed one).
    :param as_json: print ``{"plugins": [...]}`` (see :func:`describe`) instead of a table.
    :raises typer.Exit: with status 1 when a plugin has problems (each printed in red).
    """
    from thorbis_cache.plugins.manager import ENTRY_POINT_GROUP, PluginManager  # not for --help

    manager = PluginManager()
    try:
        loaded = asyncio.run(manager.load(plugin or None))
    except PluginLoadError as exc:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[bold red]error:[/] [red]{len(exc.problems)} plugin problem(s):[/]")
        for problem in exc.problems:
            err.print(f"[red]  - {escape(str(problem))}[/]")
        raise typer.Exit(EXIT_PROBLEMS) from None
    if as_json:
        typer.echo(json.dumps({"plugins": [describe(p) for p in loaded]}, indent=2))
        return
    out = Console(highlight=False)
    if not loaded:
        out.print(f"no plugins installed (entry-point group {ENTRY_POINT_GROUP!r})")
        return
    for each in loaded:
        out.print(_table(each))
