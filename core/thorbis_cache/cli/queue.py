"""``thorbis-cache deadletters list|show|replay|purge``: the invalidation queue's dead letters.

* ``list``: id, tenant, reason, attempts and age of the oldest dead letters (``--json``).
* ``show ID``: every field of one dead letter, the job included.
* ``replay ID... | --all``: move them back to the job stream (attempts reset); exit 1 if
  an id given is not a dead letter.
* ``purge [ID...]``: delete them; all of them only with ``--yes`` (or a confirmation).
"""

from __future__ import annotations

import asyncio
import enum
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from thorbis_cache.cli import options
from thorbis_cache.errors import ConfigurationError

__all__ = ["DeadLetterAction", "deadletters_command", "describe"]

if TYPE_CHECKING:  # the queue modules are imported when a command runs, not at CLI start
    from thorbis_cache.invalidation.deadletters import DeadLetter


class DeadLetterAction(enum.Enum):
    """What ``deadletters`` does."""

    list = "list"
    show = "show"
    replay = "replay"
    purge = "purge"


def describe(letter: DeadLetter, now: float | None = None) -> dict[str, Any]:
    """A dead letter as plain data: the stable shape of ``deadletters list --json``.

    :returns: id, original_id, tenant, reason, attempts, consumer, dead_at, age_s and
        job (its fields, or ``null`` when the entry is malformed).
    """
    from thorbis_cache.invalidation.queue import job_as_dict

    return {
        "id": letter.id,
        "original_id": letter.original_id,
        "tenant": letter.tenant,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "consumer": letter.consumer,
        "dead_at": letter.dead_at,
        "age_s": round(letter.age(now), 3),
        "job": job_as_dict(letter.job) if letter.job is not None else None,
    }


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def deadletters_command(
    action: Annotated[DeadLetterAction, typer.Argument(help="list, show ID, replay ID.../--all, "
                                                       "purge [ID...].")],
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids.")] = None,
    redis_url: Annotated[str, options.REDIS_URL] = "",
    prefix: Annotated[str, options.PREFIX] = "tc",
    replay_all: Annotated[bool, typer.Option("--all", help="replay: every dead letter.")] = False,
    as_json: Annotated[bool, options.JSON] = False,
    count: Annotated[int, typer.Option(min=1, help="list: at most this many.")] = 100,
    yes: Annotated[bool, typer.Option("--yes", help="purge: no confirmation.")] = False,
) -> None:
    """Inspect, replay or purge the dead letters of the invalidation queue."""
    if not redis_url:
        raise ConfigurationError("no Redis URL: pass --redis-url or set THORBIS_REDIS_URL")
    if action is DeadLetterAction.show and len(ids or ()) != 1:
        raise ConfigurationError("show takes exactly one dead-letter id")
    if action is DeadLetterAction.replay and bool(ids) == replay_all:
        raise ConfigurationError("replay takes dead-letter ids or --all (not both)")
    if action is DeadLetterAction.purge and not ids and not yes:
        typer.confirm(f"delete every dead letter of prefix {prefix!r}?", abort=True)
    asyncio.run(_run(action, ids or [], redis_url, prefix, replay_all, as_json, count))


async def _run(action: DeadLetterAction, ids: list[str], redis_url: str, prefix: str,
               replay_all: bool, as_json: bool, count: int) -> None:
    from thorbis_cache.invalidation.deadletters import DeadLetterNotFound, DeadLetters
    from thorbis_cache.store.redis_store import RedisStore

    out = Console(highlight=False, soft_wrap=True)
    async with RedisStore.from_url(redis_url) as store:
        letters = DeadLetters(store, prefix)
        if action is DeadLetterAction.list:
            found = await letters.list(count=count)
            if as_json:
                typer.echo(json.dumps({"dead_letters": [describe(x) for x in found]}, indent=2))
                return
            table = Table(title=f"{await letters.count()} dead letter(s) in {letters.keys.dead}",
                          title_justify="left")
            for name in ("id", "tenant", "reason", "attempts", "age"):
                table.add_column(name, overflow="fold")
            for x in found:
                table.add_row(x.id, escape(x.tenant or "?"), escape(x.reason),
                              str(x.attempts), _age(x.age()))
            out.print(table)
        elif action is DeadLetterAction.show:
            letter = await letters.get(ids[0])
            if letter is None:
                raise DeadLetterNotFound(ids, letters.keys.dead)
            typer.echo(json.dumps(describe(letter), indent=2))
        elif action is DeadLetterAction.replay:
            report = await (letters.replay_all() if replay_all else letters.replay(ids))
            if as_json:
                typer.echo(json.dumps({"replayed": report.replayed,
                                       "missing": report.missing,
                                       "malformed": report.malformed}, indent=2))
            else:
                for old, new in report.replayed.items():
                    out.print(f"replayed {old} -> {new}")
                for old in report.malformed:
                    out.print(f"[yellow]kept {old}: malformed, replaying would fail again[/]")
                out.print(f"{len(report.replayed)} dead letter(s) replayed")
            if report.missing and not replay_all:
                raise DeadLetterNotFound(report.missing, letters.keys.dead)
        else:
            n = await letters.purge(ids or None)
            out.print(f"{n} dead letter(s) deleted")
