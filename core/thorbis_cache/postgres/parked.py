"""Changes parked while their Redis Cluster shard is out of reach (``thorbis.parked_changes``).

The outbox worker parks the changes of tenants whose shard did not answer while the
others did (:mod:`~thorbis_cache.invalidation.shard_outage`). They wait here, not in
``thorbis.outbox``, for their tenant's retry time (``thorbis.parked_tenants``), which
backs off while the shard stays away: the outbox's batches never see them, so a shard
lost for long under heavy writes costs the live shards' changes nothing, and a parked
change is not claimed, refused and written back by every batch.

Every function takes a connection inside the caller's transaction. Parking and the
retry lock a tenant's schedule row (an upsert, a ``FOR UPDATE``), so a retry that
finds a tenant's last change applied and forgets the tenant cannot lose a change that
another worker parks meanwhile: the parker's upsert waits for the retry to commit,
then writes the tenant again. (A worker parks and retries on one connection, one after
the other; only two workers can meet there, and the parker waits at most for the
retry's batch.)
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import attrs

from thorbis_cache.postgres.outbox import OutboxRow, as_json

__all__ = ["FIRST_RETRY", "MAX_RETRY", "DueTenant", "ParkedFigures", "claim_parked",
           "due_now", "due_tenant", "figures", "forget_if_empty", "park", "retry_later"]

#: Seconds after which a tenant's parked changes are first tried again.
FIRST_RETRY = 0.5
#: The longest wait between two tries of a tenant whose shard stays away (the wait
#: doubles from :data:`FIRST_RETRY`): a shard that answers again is found within this.
MAX_RETRY = 5.0

_PARK = """
INSERT INTO thorbis.parked_changes (txid, created_at, table_name, operation, tenant_id,
                                    pk, old, new, attempts, last_error)
VALUES ($1::text::xid8, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9, $10)
"""

# DO UPDATE, not DO NOTHING: it locks the tenant's row, so it waits for a retry that
# holds it and may yet forget the tenant (without seeing this transaction's changes),
# and writes the row again if the retry did. DO NOTHING would pass a row that is only
# locked, and the tenant forgotten after it would leave these changes without a turn
# (tests/test_parked.py). A schedule already set is kept: parking more changes does
# not hurry a backed-off tenant.
_SCHEDULE = """
INSERT INTO thorbis.parked_tenants AS p (tenant, retry_at, last_error)
SELECT t, clock_timestamp() + make_interval(secs => $2), $3 FROM unnest($1::text[]) AS t
ORDER BY t
ON CONFLICT (tenant) DO UPDATE SET retry_at = p.retry_at
"""

_DUE = """
SELECT tenant, tries FROM thorbis.parked_tenants
 WHERE retry_at <= clock_timestamp()
 ORDER BY retry_at LIMIT 1 FOR UPDATE SKIP LOCKED
"""

_CLAIM = """
DELETE FROM thorbis.parked_changes
 WHERE id IN (SELECT id FROM thorbis.parked_changes
               WHERE coalesce(tenant_id, '') = $1 ORDER BY id LIMIT $2
               FOR UPDATE SKIP LOCKED)
RETURNING id, txid::text AS txid, created_at, table_name, operation, tenant_id,
          pk::text AS pk, old::text AS old, new::text AS new, attempts, last_error,
          extract(epoch FROM clock_timestamp() - created_at)::float8 AS age
"""

_FIGURES = """
SELECT count(*) AS parked,
       extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS oldest,
       count(DISTINCT coalesce(tenant_id, '')) AS tenants
  FROM thorbis.parked_changes
"""


@attrs.frozen(slots=True)
class DueTenant:
    """A tenant whose parked changes are due for a try (its schedule row locked by the
    caller's transaction). :ivar tenant: the tenant id ('' for changes of every
    tenant). :ivar tries: tries that found its shard away since it was parked."""

    tenant: str
    tries: int


@attrs.frozen(slots=True)
class ParkedFigures:
    """What waits parked. :ivar changes: parked changes. :ivar oldest_seconds: age of
    the oldest (0 when none). :ivar tenants: tenants they belong to."""

    changes: int
    oldest_seconds: float
    tenants: int


async def park(conn: asyncpg.Connection, rows: Sequence[OutboxRow], error: str) -> None:
    """Park ``rows`` (in the batch transaction, which claimed them or read them from the
    WAL): their creation time, transaction and attempts kept, their tenants scheduled
    for a try in :data:`FIRST_RETRY` seconds unless already scheduled."""
    if not rows:
        return
    await conn.executemany(_PARK, [
        (row.txid, row.created_at, row.table_name, row.operation, row.tenant_id,
         as_json(row.pk), as_json(row.old), as_json(row.new), row.attempts,
         row.last_error) for row in rows])
    await conn.execute(_SCHEDULE, sorted({row.tenant_id or "" for row in rows}), FIRST_RETRY,
                       error[:1000])


async def due_tenant(conn: asyncpg.Connection) -> DueTenant | None:
    """The tenant whose retry time passed longest ago, its schedule locked until the
    transaction ends (others skip it); None when none is due."""
    row = await conn.fetchrow(_DUE)
    return None if row is None else DueTenant(row["tenant"], row["tries"])


async def claim_parked(conn: asyncpg.Connection, tenant: str, limit: int) -> list[OutboxRow]:
    """Take up to ``limit`` of ``tenant``'s parked changes, oldest first (deleted when
    the transaction commits, back on a rollback)."""
    return [OutboxRow.from_record(r) for r in await conn.fetch(_CLAIM, tenant, limit)]


async def retry_later(conn: asyncpg.Connection, due: DueTenant, error: str) -> float:
    """``due``'s shard is still away: its next try after twice the last wait (from
    :data:`FIRST_RETRY`, at most :data:`MAX_RETRY`); returns that wait."""
    wait = min(FIRST_RETRY * 2.0 ** (due.tries + 1), MAX_RETRY)
    await conn.execute(
        "UPDATE thorbis.parked_tenants SET tries = tries + 1, last_error = $2, "
        "retry_at = clock_timestamp() + make_interval(secs => $3) WHERE tenant = $1",
        due.tenant, error[:1000], wait)
    return wait


async def due_now(conn: asyncpg.Connection, tenants: Sequence[str]) -> None:
    """Make ``tenants``' tries due at once (their shard answered again)."""
    await conn.execute("UPDATE thorbis.parked_tenants SET retry_at = clock_timestamp() "
                       "WHERE tenant = ANY($1::text[])", list(tenants))


async def forget_if_empty(conn: asyncpg.Connection, tenant: str) -> bool:
    """After a try that reached ``tenant``'s shard: forget the tenant when none of its
    changes are left (True), else make the rest due at once."""
    left = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM thorbis.parked_changes "
        "WHERE coalesce(tenant_id, '') = $1)", tenant)
    if left:
        await conn.execute("UPDATE thorbis.parked_tenants SET tries = 0, "
                           "retry_at = clock_timestamp() WHERE tenant = $1", tenant)
        return False
    await conn.execute("DELETE FROM thorbis.parked_tenants WHERE tenant = $1", tenant)
    return True


async def figures(conn: asyncpg.Connection) -> ParkedFigures:
    """How many changes wait parked, the oldest's age and their tenants (a health
    figure: one count over the parked rows, which exist only during a shard outage)."""
    row = await conn.fetchrow(_FIGURES)
    return ParkedFigures(int(row["parked"]), float(row["oldest"] or 0.0), int(row["tenants"]))
