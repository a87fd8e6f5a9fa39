"""``thorbis.invalidation_log``: the recent invalidations a failover may have undone.

See ``sql/core/005_replay_log.sql`` and :mod:`thorbis_cache.invalidation.replay`.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import attrs

__all__ = ["LoggedInvalidation", "append", "prune", "since"]


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


async def append(conn: asyncpg.Connection, tenant: str, keys: Sequence[str],
                 tags: Sequence[str]) -> int:
    """Record a batch's invalidations of ``tenant``; returns the row id."""
    row_id: int = await conn.fetchval(
        "INSERT INTO thorbis.invalidation_log (tenant, keys, tags) VALUES ($1, $2, $3) "
        "RETURNING id", tenant, list(keys), list(tags))
    return row_id


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
