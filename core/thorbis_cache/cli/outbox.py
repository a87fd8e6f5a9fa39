"""``thorbis-cache outbox-deadletters list|show|replay|purge``: the outbox's dead letters.

The PostgreSQL twin of ``deadletters`` (the Redis invalidation queue's), with the same
actions; named ``outbox-deadletters`` so that the two sit side by side in the listing.

* ``list``: id, table, operation, tenant, reason, attempts and age of the oldest dead
  letters (``--table``, ``--tenant`` filter them; ``--json``).
* ``show ID``: every field of one, the change's key and images included.
* ``replay ID... | --all``: move them back into ``thorbis.outbox`` (attempts reset) for
  the worker to apply again; exit 1 if an id given is not a dead letter.
* ``purge [ID...]``: delete them; all of them only with ``--yes`` (or a confirmation).
"""

from __future__ import annotations

import asyncio
import enum
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from thorbis_cache.cli import options
from thorbis_cache.cli.dsn import check_postgres, redact_dsn
from thorbis_cache.cli.options import BadInput
from thorbis_cache.errors import ConfigurationError, DeadLetterNotFound

if TYPE_CHECKING:
    import asyncpg

__all__ = ["OutboxDeadLetterAction", "outbox_deadletters_command"]


class OutboxDeadLetterAction(enum.Enum):
    """What ``outbox-deadletters`` does."""

    list = "list"
    show = "show"
    replay = "replay"
    purge = "purge"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


#: The largest id a dead letter can have (a bigint).
_MAX_ID = 2**63 - 1


def _ids(values: list[str]) -> list[int]:
    out = []
    for value in values:
        try:
            number = int(value)
        except ValueError:
            raise BadInput(
                f"outbox dead-letter id {value!r} is not an integer (see `list`)") from None
        if not 1 <= number <= _MAX_ID:  # asyncpg would raise a DataError with a traceback
            raise BadInput(f"outbox dead-letter id {value!r} is out of range: ids are "
                           f"1 to {_MAX_ID} (see `list`)")
        out.append(number)
    return out


def outbox_deadletters_command(
    action: Annotated[OutboxDeadLetterAction, typer.Argument(
        help="list, show ID, replay ID.../--all, purge [ID...].")],
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids.")] = None,
    dsn: Annotated[str, options.DSN] = "",
    replay_all: Annotated[bool, typer.Option("--all", help="replay: every dead letter.")] = False,
    table: Annotated[str | None, typer.Option(
        "--table", help="list: only the changes of this table (schema.table).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="list: only this tenant.")
                      ] = None,
    count: Annotated[int, typer.Option(min=1, help="list: at most this many.")] = 100,
    as_json: Annotated[bool, options.JSON] = False,
    yes: Annotated[bool, typer.Option("--yes", help="purge: no confirmation.")] = False,
) -> None:
    """Inspect, replay or purge the dead letters of the outbox (changes the worker could
    not turn into invalidations, in thorbis.outbox_dead_letters). Replay puts a change
    back into thorbis.outbox, attempts reset, for the worker to apply again.

    Exit status: 0 done, 1 an error (printed as one line: bad DSN, PostgreSQL
    unreachable, database not migrated, an id that is not a dead letter).
    """
    if not dsn:
        raise ConfigurationError("no PostgreSQL DSN: pass --dsn or set THORBIS_POSTGRES_DSN")
    numbers = _ids(ids or [])
    if action is OutboxDeadLetterAction.show and len(numbers) != 1:
        raise BadInput("show takes exactly one dead-letter id")
    if action is OutboxDeadLetterAction.replay and bool(numbers) == replay_all:
        raise BadInput("replay takes dead-letter ids or --all (not both)")
    if action is OutboxDeadLetterAction.purge and not numbers and not yes:
        typer.confirm(f"delete every outbox dead letter of {redact_dsn(dsn)}?", abort=True)
    asyncio.run(_run(action, numbers, dsn, replay_all, table, tenant, count, as_json))


async def _run(action: OutboxDeadLetterAction, ids: list[int], dsn: str, replay_all: bool,
               table: str | None, tenant: str | None, count: int, as_json: bool) -> None:
    from thorbis_cache.postgres.connection import connect

    await check_postgres(dsn)
    conn = await connect(dsn)
    try:
        await _act(conn, action, ids, replay_all, table, tenant, count, as_json)
    finally:
        await conn.close()


async def _act(conn: asyncpg.Connection, action: OutboxDeadLetterAction, ids: list[int],
               replay_all: bool, table: str | None, tenant: str | None, limit: int,
               as_json: bool) -> None:
    from thorbis_cache.postgres import outbox_deadletters as dl

    out = Console(highlight=False, soft_wrap=True)
    if action is OutboxDeadLetterAction.list:
        found = await dl.list_dead_letters(conn, limit=limit, table=table, tenant=tenant)
        if as_json:
            typer.echo(json.dumps({"dead_letters": [x.as_dict() for x in found]}, indent=2))
            return
        grid = Table(title=f"{await dl.count(conn)} dead letter(s) in {dl.TABLE}",
                     title_justify="left")
        for name in ("id", "table", "op", "tenant", "reason", "attempts", "age"):
            grid.add_column(name, overflow="fold")
        for x in found:
            grid.add_row(str(x.id), escape(x.table_name or "?"), x.operation or "?",
                         escape(x.tenant_id or "-"), escape(x.reason), str(x.attempts),
                         _age(x.as_dict()["age_s"]))
        out.print(grid)
    elif action is OutboxDeadLetterAction.show:
        letter = await dl.get(conn, ids[0])
        if letter is None:
            raise DeadLetterNotFound([str(ids[0])], dl.TABLE)
        typer.echo(json.dumps(letter.as_dict(), indent=2, default=str))
    elif action is OutboxDeadLetterAction.replay:
        report = await (dl.replay_all(conn) if replay_all else dl.replay(conn, ids))
        if as_json:
            typer.echo(json.dumps({"replayed": {str(k): v for k, v in report.replayed.items()},
                                   "missing": report.missing, "malformed": report.malformed},
                                  indent=2))
        else:
            for old, new in report.replayed.items():
                out.print(f"replayed {old} -> thorbis.outbox {new}")
            for old in report.malformed:
                out.print(f"[yellow]kept {old}: no table or operation, nothing to replay[/]")
            out.print(f"{len(report.replayed)} dead letter(s) replayed")
        if report.missing and not replay_all:
            raise DeadLetterNotFound([str(i) for i in report.missing], dl.TABLE)
    else:
        missing = [] if not ids else [i for i in dict.fromkeys(ids)
                                      if await dl.get(conn, i) is None]
        n = await dl.purge(conn, ids or None)
        if as_json:
            typer.echo(json.dumps({"deleted": n}))
        else:
            out.print(f"{n} dead letter(s) deleted")
        if missing:  # as show and replay say of an id that is not a dead letter
            raise DeadLetterNotFound([str(i) for i in missing], dl.TABLE)
