"""The outbox's dead letters (``thorbis.outbox_dead_letters``): inspect, replay, purge.

The worker dead-letters a change it can never apply -- a rule's parameter of the wrong
type, a malformed row, retries exhausted (``max_attempts``) -- in the batch transaction
that deletes it from ``thorbis.outbox`` (:func:`thorbis_cache.postgres.outbox.dead_letter`),
keeping the change (table, operation, tenant, key and images as JSON), the reason and
the attempts made. They are pruned after ``dead_letter_days``.

A replay moves a dead letter back into ``thorbis.outbox`` as a new row -- attempts back
to zero, ``created_at`` now (the lag counts from the replay), ``txid`` the original one
(diagnostics only) -- and deletes the dead letter, in one transaction per batch: two
operators replaying at once replay it once (the ``DELETE ... RETURNING`` locks the row).
A ``NOTIFY`` wakes the workers. The next worker batch applies it again, whichever
capture the worker reads (under logical capture it applies what waits in
``thorbis.outbox`` once the stream has nothing); one that still cannot be planned is
dead-lettered again (fix the plugin or the row first).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import attrs

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.postgres.triggers import CHANNEL

__all__ = [
    "TABLE",
    "OutboxDeadLetter",
    "ReplayReport",
    "count",
    "get",
    "list_dead_letters",
    "purge",
    "replay",
    "replay_all",
]

TABLE = "thorbis.outbox_dead_letters"

_COLUMNS = ("id, outbox_id, failed_at, reason, attempts, txid::text AS txid, created_at, "
            "table_name, operation, tenant_id, pk::text AS pk, old::text AS old, "
            "new::text AS new")

# One dead letter back into the outbox, atomically: the DELETE locks and removes it (a
# concurrent replay finds nothing), the INSERT re-enqueues its change with attempts 0.
_REPLAY = """
WITH moved AS (
    DELETE FROM thorbis.outbox_dead_letters
     WHERE id = $1 AND table_name IS NOT NULL AND operation IS NOT NULL
    RETURNING txid, table_name, operation, tenant_id, pk, old, new
)
INSERT INTO thorbis.outbox (txid, table_name, operation, tenant_id, pk, old, new)
SELECT coalesce(txid, pg_current_xact_id()), table_name, operation, tenant_id, pk, old, new
  FROM moved
RETURNING id
"""


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@attrs.frozen(slots=True)
class OutboxDeadLetter:
    """One dead letter of the outbox.

    :ivar id: its id in ``thorbis.outbox_dead_letters`` (what show/replay/purge take).
    :ivar outbox_id: the change's id in ``thorbis.outbox`` (or its WAL position's, under
        logical capture).
    :ivar failed_at: when it was dead-lettered.
    :ivar reason: why (the worker's message: rule, target, parameter, column, value).
    :ivar attempts: failed attempts before it was given up.
    :ivar txid: the transaction that wrote the change.
    :ivar created_at: when the change was captured.
    :ivar table_name: the changed table; :ivar operation: INSERT, UPDATE or DELETE.
    :ivar tenant_id: the change's tenant (None when the row had none).
    :ivar pk: the row's key; :ivar old: its image before; :ivar new: after (JSON values).
    """

    id: int
    outbox_id: int
    failed_at: dt.datetime
    reason: str
    attempts: int
    txid: str | None
    created_at: dt.datetime | None
    table_name: str | None
    operation: str | None
    tenant_id: str | None
    pk: Any
    old: Any
    new: Any

    @classmethod
    def from_record(cls, r: Any) -> OutboxDeadLetter:
        """Build from a row selected with the module's column list."""
        return cls(r["id"], r["outbox_id"], r["failed_at"], r["reason"], r["attempts"],
                   r["txid"], r["created_at"], r["table_name"], r["operation"],
                   r["tenant_id"], _json(r["pk"]), _json(r["old"]), _json(r["new"]))

    @property
    def replayable(self) -> bool:
        """Whether it holds a change the outbox can take (a table and an operation)."""
        return self.table_name is not None and self.operation is not None

    def as_dict(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """Plain data (the stable shape of ``outbox-deadletters list --json``): every
        field, times as ISO strings, and ``age_s`` since it was dead-lettered."""
        now = now or dt.datetime.now(dt.UTC)
        out = attrs.asdict(self)
        for name in ("failed_at", "created_at"):
            value = out[name]
            out[name] = value.isoformat() if value is not None else None
        out["age_s"] = round(max(0.0, (now - self.failed_at).total_seconds()), 3)
        return out


@attrs.frozen(slots=True)
class ReplayReport:
    """What :func:`replay` did.

    :ivar replayed: dead-letter id -> the new ``thorbis.outbox`` id.
    :ivar missing: ids that were not (or no longer) dead letters.
    :ivar malformed: ids kept because they hold no table or operation to replay.
    """

    replayed: dict[int, int]
    missing: tuple[int, ...]
    malformed: tuple[int, ...]


async def _check_table(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT to_regclass($1)", TABLE) is None:
        raise ConfigurationError(
            f"{TABLE} does not exist: run `thorbis-cache db migrate` (or `db init`) first")


async def count(conn: asyncpg.Connection) -> int:
    """How many dead letters there are.

    :raises ConfigurationError: the table does not exist (the database is not migrated).
    """
    await _check_table(conn)
    return int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}"))  # noqa: S608 -- a constant


async def list_dead_letters(conn: asyncpg.Connection, *, limit: int = 100,
                            after: int = 0, table: str | None = None,
                            tenant: str | None = None) -> list[OutboxDeadLetter]:
    """The oldest ``limit`` dead letters with an id above ``after``, optionally of one
    table and/or one tenant.

    :raises ConfigurationError: the table does not exist.
    """
    await _check_table(conn)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE id > $1 "  # noqa: S608 -- constants
        "AND ($2::text IS NULL OR table_name = $2) AND ($3::text IS NULL OR tenant_id = $3) "
        "ORDER BY id LIMIT $4", after, table, tenant, limit)
    return [OutboxDeadLetter.from_record(r) for r in rows]


async def get(conn: asyncpg.Connection, dead_letter_id: int) -> OutboxDeadLetter | None:
    """The dead letter ``dead_letter_id``, or None.

    :raises ConfigurationError: the table does not exist.
    """
    await _check_table(conn)
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = $1",  # noqa: S608
                              dead_letter_id)
    return None if row is None else OutboxDeadLetter.from_record(row)


async def replay(conn: asyncpg.Connection, ids: Sequence[int]) -> ReplayReport:
    """Move the dead letters ``ids`` back into ``thorbis.outbox`` (see the module
    docstring), in one transaction, then wake the workers.

    :raises ConfigurationError: the table does not exist.
    """
    await _check_table(conn)
    replayed: dict[int, int] = {}
    missing: list[int] = []
    malformed: list[int] = []
    async with conn.transaction():
        for dead_letter_id in dict.fromkeys(ids):
            new_id = await conn.fetchval(_REPLAY, dead_letter_id)
            if new_id is not None:
                replayed[dead_letter_id] = int(new_id)
            elif await conn.fetchval(f"SELECT true FROM {TABLE} WHERE id = $1",  # noqa: S608
                                     dead_letter_id):
                malformed.append(dead_letter_id)
            else:
                missing.append(dead_letter_id)
        if replayed:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return ReplayReport(replayed, tuple(missing), tuple(malformed))


async def replay_all(conn: asyncpg.Connection, *, batch: int = 500) -> ReplayReport:
    """Replay every dead letter present when the call starts, ``batch`` per transaction
    (a change that fails again at once is not replayed twice by one call).

    :raises ConfigurationError: the table does not exist.
    """
    await _check_table(conn)
    until = await conn.fetchval(f"SELECT max(id) FROM {TABLE}")  # noqa: S608 -- a constant
    replayed: dict[int, int] = {}
    missing: list[int] = []
    malformed: list[int] = []
    after = 0
    while until is not None:
        ids = [int(r["id"]) for r in await conn.fetch(
            f"SELECT id FROM {TABLE} WHERE id > $1 AND id <= $2 "  # noqa: S608 -- a constant
            "ORDER BY id LIMIT $3", after, until, batch)]
        if not ids:
            break
        after = ids[-1]
        report = await replay(conn, ids)
        replayed.update(report.replayed)
        missing += report.missing
        malformed += report.malformed
    return ReplayReport(replayed, tuple(missing), tuple(malformed))


async def purge(conn: asyncpg.Connection, ids: Sequence[int] | None = None) -> int:
    """Delete the dead letters ``ids``, or every one when ``ids`` is None.

    :returns: how many were deleted.
    :raises ConfigurationError: the table does not exist.
    """
    await _check_table(conn)
    if ids is None:
        result = await conn.execute(f"DELETE FROM {TABLE}")  # noqa: S608 -- a constant
    elif not ids:
        return 0
    else:
        result = await conn.execute(f"DELETE FROM {TABLE} WHERE id = ANY($1::bigint[])",  # noqa: S608
                                    list(ids))
    return int(str(result).rsplit(" ", 1)[-1])
