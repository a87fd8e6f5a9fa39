"""The ``thorbis-cache`` command line: one typer app; each command group lives in its
module of this package (``db``, ``mv``, ``queue``, ``explain``...).

A command module exposes a plain typer command function; :func:`_add` registers it here
with the CLI's error policy: an error of :mod:`thorbis_cache.errors` is printed as one
red line on stderr (no traceback) and exits with status 1; Ctrl-C exits with 130 after
the command's own cleanup (servers stopped, connections closed) has run.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup

from thorbis_cache import __version__, demo
from thorbis_cache.cli import db as cli_db
from thorbis_cache.cli import explain as cli_explain
from thorbis_cache.cli import health as cli_health
from thorbis_cache.cli import invalidate as cli_invalidate
from thorbis_cache.cli import keyring as cli_keyring
from thorbis_cache.cli import mv as cli_mv
from thorbis_cache.cli import outbox as cli_outbox
from thorbis_cache.cli import plugins as cli_plugins
from thorbis_cache.cli import queue as cli_queue
from thorbis_cache.cli import scaffold as cli_scaffold
from thorbis_cache.cli import serve as cli_serve
from thorbis_cache.cli import stats as cli_stats
from thorbis_cache.cli.options import EXIT_USAGE, BadInput
from thorbis_cache.errors import ThorbisCacheError

__all__ = ["app", "main", "plain_help", "plain_value_name"]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

#: How an option's value shows in ``--help``, as Redis and PostgreSQL tools print it
#: (typer 0.29 prints the Python type: ``<str>``, ``<int range>``, ``<bool>``).
_VALUE_NAMES = {"str": "TEXT", "list[str]": "TEXT", "int": "INTEGER", "int range": "INTEGER",
                "float": "FLOAT", "float range": "FLOAT", "Path": "PATH", "path": "PATH"}


def plain_value_name(param: object) -> str | None:
    """The value placeholder ``--help`` shows for ``param``: nothing for a flag, TEXT,
    INTEGER, FLOAT or PATH for a value, ``[a|b]`` for a choice; None to leave typer's."""
    if getattr(param, "is_flag", False):
        return ""
    display = getattr(param, "display_type", None)
    if display is None:
        return None
    shown = str(display(None)).strip("<>")
    if "|" in shown:
        return f"[{shown}]"
    return _VALUE_NAMES.get(shown, shown.upper())


def _plain_value(param: Any) -> None:
    """Show ``param``'s value as :func:`plain_value_name` says (once: a metavar set is
    kept)."""
    if getattr(param, "metavar", None) is not None:
        return
    shown = plain_value_name(param)
    if isinstance(param, TyperArgument):
        # An argument's metavar is its name column; only its type column changes.
        if shown is not None:
            param.display_type_rich = lambda ctx=None, shown=shown: shown  # type: ignore[method-assign, misc]
    else:
        param.metavar = shown


def _plain_values(command: Any) -> None:
    for param in command.params:
        _plain_value(param)
    made = command.get_help_option  # --help is made on demand, a flag like the others

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            _plain_value(option)
        return option

    command.get_help_option = get_help_option


#: click's UsageError (BadParameter, NoSuchOption, MissingParameter... derive from it),
#: wherever typer takes click from: typer 0.12-0.2x depends on click, later ones vendor it.
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


@contextlib.contextmanager
def _usage_exit() -> Iterator[None]:
    """Give a usage error (click's: an unknown option, a bad value, a missing argument)
    the CLI's own exit status; click prints it and exits with it as usual."""
    try:
        yield
    except _USAGE_ERROR as exc:
        exc.exit_code = EXIT_USAGE  # type: ignore[attr-defined]
        raise


class _PlainHelp(TyperGroup):
    """The command group, with every option's value shown by :func:`plain_value_name`,
    and usage errors exiting with :data:`~thorbis_cache.cli.options.EXIT_USAGE`."""

    def __init__(self, **attrs: object) -> None:
        super().__init__(**attrs)  # type: ignore[arg-type]
        _plain_values(self)
        for command in self.commands.values():
            _plain_values(command)

    def make_context(self, info_name: str | None, args: list[str],
                     parent: Any = None, **extra: Any) -> Any:
        with _usage_exit():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        # A subcommand's arguments are parsed here (and its name resolved).
        with _usage_exit():
            return super().invoke(ctx)

    def get_params(self, ctx: Any) -> list[Any]:
        # typer adds --install-completion/--show-completion after the group is built.
        params: list[Any] = super().get_params(ctx)
        for param in params:
            _plain_value(param)
        return params


app = typer.Typer(
    name="thorbis-cache",
    cls=_PlainHelp,
    help="Multi-tenant cache framework on Redis and PostgreSQL.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish)
    # Our errors are reported as one line; anything else is a bug and keeps its
    # plain traceback (rich's would hide locals' values less predictably).
    pretty_exceptions_enable=False,
)

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def _report_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command with the CLI's error policy (see the module docstring)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ThorbisCacheError as exc:
            # One line: the message names what failed; a multi-line one (a server's log
            # tail) is kept, but starts on the red line.
            _stderr.print(f"[bold red]error:[/] [red]{escape(str(exc))}[/]")
            raise typer.Exit(EXIT_USAGE if isinstance(exc, BadInput)
                             else EXIT_ERROR) from None
        except KeyboardInterrupt:
            _stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


_FIELD = re.compile(r"\s*:[a-z]+( [^:]+)?:( |$)")  # a reST field: ":param x:", ":raises E:"
_ROLE = re.compile(r":[a-z]+:`~?([^`<]+?)(?: <[^>]+>)?`")  # :func:`name`, :class:`~a.B`


def plain_help(func: Callable[..., object]) -> str:
    """The help text of a command: its docstring up to ``\f`` or the first reST field
    (``:param:``, ``:raises:``...), with roles (``:func:`x```) and ``````x`````` literals
    written as plain text, since the terminal shows no reST."""
    doc = (inspect.getdoc(func) or "").split("\f", 1)[0]
    kept: list[str] = []
    for line in doc.splitlines():
        if _FIELD.match(line):
            break
        kept.append(line)
    return _ROLE.sub(r"\1", "\n".join(kept).strip()).replace("``", "")


def _add(name: str, func: Callable[..., object]) -> None:
    """Register ``func`` as command ``name`` (help text from its docstring, see
    :func:`plain_help`)."""
    app.command(name, help=plain_help(func))(_report_errors(func))


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"thorbis-cache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Multi-tenant cache framework on Redis and PostgreSQL."""


_add("demo", demo.command)
_add("plugins", cli_plugins.command)
_add("new-plugin", cli_scaffold.command)
_add("db", cli_db.db_command)
_add("worker", cli_db.worker_command)
_add("audit", cli_db.audit_command)
_add("deadletters", cli_queue.deadletters_command)
_add("refresh", cli_mv.refresh_command)
_add("mv", cli_mv.mv_command)
_add("keyring", cli_keyring.keyring_command)
_add("serve", cli_serve.serve_command)
_add("explain", cli_explain.explain_command)
_add("invalidate", cli_invalidate.invalidate_command)
_add("outbox-deadletters", cli_outbox.outbox_deadletters_command)
_add("health", cli_health.health_command)
_add("stats", cli_stats.stats_command)


def main() -> None:
    """Entry point of the ``thorbis-cache`` console script."""
    app()

