"""Commit-safe consumption of ``thorbis.outbox``: claim-and-delete, dead letters, pruning.

Why claim-and-delete rather than a stored position: sequence ids are handed out at
insert, not at commit, so a worker that remembers "last id seen" skips the rows of a
transaction that took id 10 but committed after id 11 was processed. Here a worker
deletes what it claims -- ``DELETE ... WHERE id IN (SELECT id ... ORDER BY id LIMIT n
FOR UPDATE SKIP LOCKED) RETURNING ...`` -- inside a transaction it keeps open while the
batch is processed:

* an uncommitted change is invisible, and is claimed by a later batch once committed
  (nothing is ever skipped: there is no cursor);
* rows claimed by one worker are locked, so other workers skip them (no double processing);
* a worker that dies mid-batch aborts its transaction, and its rows reappear.

The functions here take a connection already inside the batch transaction, except
:func:`record_failure` and :func:`prune_dead_letters`, which run their own.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import attrs

from thorbis_cache.postgres.outbox_images import Shape

__all__ = [
    "ATTEMPTED",
    "DB_ERRORS",
    "OutboxRow",
    "as_json",
    "claim_batch",
    "count_changes",
    "dead_letter",
    "pending_count",
    "prune_dead_letters",
    "record_failure",
]

#: What a lost or failing database connection raises (callers outside this package
#: catch these without importing asyncpg).
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
)

# One statement (the claim is the transaction's last query until the batch is applied):
# the claimed rows, then the capture shapes they name (rows with is_shape).
_CLAIM = """
WITH claimed AS (
    DELETE FROM thorbis.outbox
    WHERE id IN (SELECT id FROM thorbis.outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING *
)
SELECT false AS is_shape, id, txid::text AS txid, created_at, table_name, operation,
       tenant_id, pk::text AS pk, old::text AS old, new::text AS new, attempts, last_error,
       extract(epoch FROM clock_timestamp() - created_at)::float8 AS age,
       shape, old_values, new_values, NULL::text[] AS columns, NULL::boolean[] AS quoted,
       NULL::text[] AS key_columns, NULL::text[] AS image_columns
  FROM claimed
UNION ALL
SELECT true, s.id, NULL, NULL, s.table_name, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, s.columns, s.quoted, s.key_columns, s.image_columns
  FROM thorbis.capture_shapes s
 WHERE s.id IN (SELECT shape FROM claimed)
"""

_DEAD_LETTER = """
INSERT INTO thorbis.outbox_dead_letters
    (outbox_id, reason, attempts, txid, created_at, table_name, operation, tenant_id,
     pk, old, new)
VALUES ($1, $2, $3, $4::text::xid8, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11::jsonb)
"""


@attrs.frozen(slots=True)
class OutboxRow:
    """One claimed change, as stored (JSON columns still as text: decoding is the
    worker's job, so a malformed value dead-letters one row instead of failing the batch).
    Logical capture decodes the WAL itself and passes ``pk``/``old``/``new`` as objects,
    and so does :func:`claim_batch` for the compact rows of the capture triggers
    (:mod:`~thorbis_cache.postgres.outbox_images`).

    :ivar age: seconds between the row's creation and its claim (the lag).
    """

    id: int
    txid: str
    created_at: dt.datetime
    table_name: str
    operation: str
    tenant_id: str | None
    pk: str | Mapping[str, Any]
    old: str | Mapping[str, Any] | None
    new: str | Mapping[str, Any] | None
    attempts: int
    last_error: str | None
    age: float

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OutboxRow:
        """Build from a row of the claim query."""
        return cls(**{f.name: record[f.name] for f in attrs.fields(cls)})


async def claim_batch(conn: asyncpg.Connection, limit: int) -> list[OutboxRow]:
    """Claim and delete up to ``limit`` committed rows, oldest first.

    The deletion takes effect when the caller's transaction commits; until then the rows
    are locked (other workers skip them), and a rollback or a dead connection returns them.

    :param conn: a connection inside the batch transaction.
    :param limit: batch size.
    """
    records = await conn.fetch(_CLAIM, limit)
    shapes = {r["id"]: Shape.from_record(r) for r in records if r["is_shape"]}
    return [_row(r, shapes) for r in records if not r["is_shape"]]


def _row(record: Mapping[str, Any], shapes: Mapping[int, Shape]) -> OutboxRow:
    """A claimed row; a compact one (written by the current triggers) gets its key and
    images rebuilt from its shape (:mod:`~thorbis_cache.postgres.outbox_images`)."""
    row = OutboxRow.from_record(record)
    shape_id = record["shape"]
    if shape_id is None:
        return row
    shape = shapes.get(shape_id)
    values = {"old": record["old_values"], "new": record["new_values"]}
    try:
        if shape is None:
            raise ValueError(f"capture shape {shape_id} does not exist")
        pk, old, new = shape.images(values["old"], values["new"])
    except ValueError as exc:
        # Not JSON: planning refuses it and the worker dead-letters the row with this
        # text, values included.
        text = f"undecodable outbox row: {exc}; values {values!r}"
        return attrs.evolve(row, pk=text, old=text, new=text)
    return attrs.evolve(row, pk=pk, old=old, new=new)


async def dead_letter(conn: asyncpg.Connection, row: OutboxRow, reason: str) -> None:
    """Record ``row`` as dead with ``reason`` (in the batch transaction, so the row's
    deletion and its dead letter commit together).

    JSON values that do not parse are stored as JSON strings holding the raw text.
    """

    await conn.execute(
        _DEAD_LETTER, row.id, reason, row.attempts, row.txid, row.created_at, row.table_name,
        row.operation, row.tenant_id, as_json(row.pk), as_json(row.old),
        as_json(row.new),
    )


def as_json(text: str | Mapping[str, Any] | None) -> str | None:
    """A jsonb parameter (a dead letter's, a parked change's): an object as JSON, JSON
    text as it is, anything else (text that does not parse) as a JSON string holding
    it."""
    if text is None:
        return None
    if not isinstance(text, str):
        return json.dumps(text)
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text)
    return text


async def count_changes(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
    """Add the claimed rows, per table, to ``thorbis.table_changes`` (inside the batch
    transaction: a row is counted exactly when it leaves the outbox). The materialized
    view scheduler's smart refresh reads these counts.

    Tables are upserted in name order, so concurrent workers lock them in one order.
    """
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.table_name] = counts.get(row.table_name, 0) + 1
    if not counts:
        return
    names = sorted(counts)
    await conn.execute(
        "INSERT INTO thorbis.table_changes AS t (table_name, changes) "
        "SELECT * FROM unnest($1::text[], $2::bigint[]) "
        "ON CONFLICT (table_name) DO UPDATE "
        "SET changes = t.changes + EXCLUDED.changes, updated_at = now()",
        names, [counts[n] for n in names],
    )


#: The tables whose rows count their failed attempts: the outbox, and the changes
#: parked while their Cluster shard was out of reach (:mod:`.parked`).
ATTEMPTED = ("thorbis.outbox", "thorbis.parked_changes")


async def record_failure(conn: asyncpg.Connection, ids: Sequence[int], error: str, *,
                         table: str = ATTEMPTED[0]) -> None:
    """Count a failed attempt on rows whose batch was rolled back (its own transaction,
    after the rollback: the batch transaction's writes are gone).

    :param table: one of :data:`ATTEMPTED`.
    """
    if table not in ATTEMPTED:
        raise ValueError(f"{table!r} counts no attempts; expected one of {ATTEMPTED}")
    await conn.execute(
        f"UPDATE {table} SET attempts = attempts + 1, last_error = $2 "  # noqa: S608
        "WHERE id = ANY($1::bigint[])", list(ids), error[:1000],
    )


async def prune_dead_letters(conn: asyncpg.Connection, older_than_days: float) -> int:
    """Delete dead letters older than ``older_than_days``; returns how many.

    Processed outbox rows need no pruning: the claim deletes them.
    """
    result = await conn.execute(
        "DELETE FROM thorbis.outbox_dead_letters "
        "WHERE failed_at < now() - make_interval(secs => $1)", older_than_days * 86400.0,
    )
    return int(str(result).rsplit(" ", 1)[-1])


async def pending_count(conn: asyncpg.Connection) -> int:
    """Committed rows waiting in the outbox (a health figure)."""
    return int(await conn.fetchval("SELECT count(*) FROM thorbis.outbox"))
