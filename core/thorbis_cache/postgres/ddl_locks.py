"""The capture's DDL never queues the host's statements behind it.

Installing capture takes table locks: ``CREATE``/``DROP TRIGGER`` and ``ALTER TABLE ...
REPLICA IDENTITY`` conflict with every writer of the table (the identity with readers
too). PostgreSQL queues each later request behind a waiting one. So a ``db init`` (run
by every deploy, and by every app start with ``apply_sql=True``) that found a host's
transaction open on a watched table waited for it. Meanwhile every INSERT, UPDATE and
DELETE of the host on that table waited behind ``db init``, and so did those on the
tables installed before it in the same transaction, for as long as that transaction ran
(found as a user would: a batch job).

So every capture DDL transaction sets ``lock_timeout`` (:func:`bound_locks`, for that
transaction only: nothing is set on a pooled session). :func:`with_lock_retries` runs
a step again after a pause when a lock was not granted in time. The host's queued
statements go on as soon as the attempt gives up. Each wait is logged with the sessions
that hold the tables. After :data:`LOCK_ATTEMPTS` it fails with
:class:`TableLockedError`, naming them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from thorbis_cache.errors import ThorbisCacheError

__all__ = ["LOCK_ATTEMPTS", "LOCK_TIMEOUT", "RETRY_PAUSE", "TableLockedError", "bound_locks",
           "lock_holders", "with_lock_retries"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds one attempt waits for a table lock; the host's statements queued behind it
#: wait as long at most.
LOCK_TIMEOUT = 2.0

#: Seconds between two attempts (the host's transaction may end meanwhile).
RETRY_PAUSE = 3.0

#: Attempts before giving up (about 100 s with the defaults).
LOCK_ATTEMPTS = 20


class TableLockedError(ThorbisCacheError):
    """Capture could not be installed: other sessions held its tables through every
    attempt (the message names them)."""


async def bound_locks(conn: asyncpg.Connection) -> None:
    """In a transaction: its table locks are waited for :data:`LOCK_TIMEOUT` at most
    (``lock_timeout``, local to the transaction)."""
    await conn.execute("SELECT set_config('lock_timeout', $1, true)",
                       f"{max(1, round(LOCK_TIMEOUT * 1000))}ms")


_HOLDERS = """
SELECT a.pid, a.application_name, a.state,
       to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS since,
       string_agg(l.mode || ' on ' || l.relation::regclass::text, ', '
                  ORDER BY l.relation::regclass::text, l.mode) AS locks,
       left(a.query, 120) AS query
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) AS t)
GROUP BY a.pid, a.application_name, a.state, a.xact_start, a.query
ORDER BY a.xact_start, a.pid
"""


async def lock_holders(conn: asyncpg.Connection, tables: Sequence[str]) -> list[str]:
    """The other sessions holding a lock on ``tables`` now, one line each: PID,
    application, state, since when, each lock it holds on them and the start of its
    statement."""
    rows = await conn.fetch(_HOLDERS, list(tables))
    return [f"PID {r['pid']} ({r['application_name'] or 'no application_name'}, "
            f"{r['state']} in a transaction since {r['since']} UTC, {r['locks']}: "
            f"{' '.join((r['query'] or '').split())!r})" for r in rows]


async def with_lock_retries(conn: asyncpg.Connection, step: Callable[[], Awaitable[T]], *,
                            what: str, tables: Sequence[str]) -> T:
    """Run ``step`` (whose transactions call :func:`bound_locks`), again after
    :data:`RETRY_PAUSE` each time a table lock was not granted in time.

    :param what: what the step does, for the log and the error (``installing the
        capture triggers``).
    :param tables: the tables it locks, whose holders are named.
    :raises TableLockedError: after :data:`LOCK_ATTEMPTS` attempts.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await step()
        except asyncpg.LockNotAvailableError:
            holders = await lock_holders(conn, tables)
            held = "; ".join(holders) or "by a session that has ended since"
            if attempt >= LOCK_ATTEMPTS:
                raise TableLockedError(
                    f"{what}: a lock on {', '.join(tables)} was not granted in "
                    f"{LOCK_ATTEMPTS} attempt(s) of {LOCK_TIMEOUT:g} s (each gave up "
                    f"rather than hold the host's statements): held {held}. End those "
                    "transactions, or run it again when they are over") from None
            log.warning("%s: waiting for a lock on %s, held %s; gave up after %g s so "
                        "that the host's statements go on; trying again in %g s "
                        "(attempt %d of %d)", what, ", ".join(tables), held, LOCK_TIMEOUT,
                        RETRY_PAUSE, attempt, LOCK_ATTEMPTS)
            await asyncio.sleep(RETRY_PAUSE)
