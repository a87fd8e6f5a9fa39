"""``thorbis-cache new-plugin NAME``: generate a new vertical distribution.

The work is done by :mod:`thorbis_cache.plugins.scaffold`; this module is the command line:
arguments, the list of files written, and the next steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from thorbis_cache.plugins.scaffold import PluginNames, scaffold_files, write_plugin

__all__ = ["command"]


def command(
    name: Annotated[
        str, typer.Argument(help="Plugin (entry-point) name, e.g. pet_grooming.")
    ],
    directory: Annotated[
        Path,
        typer.Option("--dir", help="Directory in which thorbis-NAME/ is created.",
                     file_okay=False),
    ] = Path("."),
    namespace: Annotated[
        str | None,
        typer.Option(help="Prefix of every declared name, and the PostgreSQL schema.",
                     show_default="NAME"),
    ] = None,
) -> None:
    """Generate thorbis-NAME/, a plugin distribution whose tests pass as generated.

    Entry point, every hook, SQL with a view, a README and a contract test.
    \f
    The plugin implements register_plugin_info and a key schema, SQL, a materialized
    view with a unique index, a rule, a warmer and permissions.

    :param name: the plugin's entry-point name.
    :param directory: where the project directory is created.
    :param namespace: the plugin's namespace (default: the name).
    :raises ConfigurationError: an invalid name or namespace, or the target exists.
    """
    names = PluginNames.from_name(name, namespace)
    root = write_plugin(names, directory)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[green]created[/] {escape(str(root))} "
                  f"(distribution {names.distribution}, namespace {names.namespace!r})")
    for relative in scaffold_files(names):
        console.print(f"  {escape(relative)}")
    console.print("\nnext:")
    console.print(escape(f"  pip install -e '{root}[testing]'"))
    console.print(escape(f"  pytest {root / 'tests'}"))
