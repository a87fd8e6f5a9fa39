"""``thorbis.invalidation_log``: the recent invalidations a failover may have undone.

See ``sql/core/005_replay_log.sql`` and :mod:`thorbis_cache.invalidation.replay`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg
import attrs

__all__ = ["LoggedInvalidation", "append_many", "last_ids", "prune", "since"]


@attrs.frozen(slots=True)
class LoggedInvalidation:
    """One batch's invalidations of one tenant.

    :ivar id: the row id (what the tenant's Redis marker holds once applied).
    :ivar keys: cache key bodies deleted (``<namespace>.<name>:{tenant}:...``).
    :ivar tags: tags invalidated.
    """

    id: int
    keys: tuple[str, ...]
    tags: tuple[str, ...]


async def append_many(conn: asyncpg.Connection,
                      batches: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                      ) -> dict[str, int]:
    """Record a batch's invalidations, one row per tenant, in one statement:
    ``(tenant, keys, tags)`` each; returns each tenant's row id."""
    rows = await conn.fetch(
        "INSERT INTO thorbis.invalidation_log (tenant, keys, tags) "
        "SELECT u.tenant, "
        "       ARRAY(SELECT k FROM jsonb_array_elements_text(u.keys) WITH ORDINALITY "
        "             AS e(k, n) ORDER BY n), "
        "       ARRAY(SELECT t FROM jsonb_array_elements_text(u.tags) WITH ORDINALITY "
        "             AS e(t, n) ORDER BY n) "
        "  FROM unnest($1::text[], $2::jsonb[], $3::jsonb[]) AS u(tenant, keys, tags) "
        "RETURNING id, tenant",
        [tenant for tenant, _, _ in batches],
        [json.dumps(list(keys)) for _, keys, _ in batches],
        [json.dumps(list(tags)) for _, _, tags in batches])
    return {row["tenant"]: row["id"] for row in rows}


async def last_ids(conn: asyncpg.Connection, tenants: Sequence[str]) -> dict[str, int]:
    """Each tenant's last row id (tenants without a row are left out), one index probe
    per tenant."""
    rows = await conn.fetch(
        "SELECT t.tenant, (SELECT max(l.id) FROM thorbis.invalidation_log l "
        "                   WHERE l.tenant = t.tenant) AS last "
        "  FROM unnest($1::text[]) AS t(tenant)", list(tenants))
    return {row["tenant"]: row["last"] for row in rows if row["last"] is not None}


async def since(conn: asyncpg.Connection, tenant: str, after: int,
                window: float) -> list[LoggedInvalidation]:
    """``tenant``'s rows with an id above ``after`` applied within the last ``window``
    seconds, oldest first."""
    rows = await conn.fetch(
        "SELECT id, keys, tags FROM thorbis.invalidation_log "
        "WHERE tenant = $1 AND id > $2 "
        "AND applied_at > clock_timestamp() - make_interval(secs => $3) ORDER BY id",
        tenant, after, window)
    return [LoggedInvalidation(r["id"], tuple(r["keys"]), tuple(r["tags"])) for r in rows]


async def prune(conn: asyncpg.Connection, window: float, limit: int = 10_000) -> int:
    """Delete up to ``limit`` rows older than ``window`` seconds; returns how many."""
    status: str = await conn.execute(
        "DELETE FROM thorbis.invalidation_log WHERE id IN (SELECT id FROM "
        "thorbis.invalidation_log WHERE applied_at < clock_timestamp() "
        "- make_interval(secs => $1) ORDER BY id LIMIT $2)", window, limit)
    return int(status.split()[-1])
