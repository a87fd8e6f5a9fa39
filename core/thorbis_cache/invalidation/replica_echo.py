"""Invalidate again once every standby has replayed a change: readers on replicas.

Found as a user would, with the host's reads on a streaming replica (the usual way to
spread a database's read load): the worker invalidated a change within milliseconds of
its commit on the primary; a reader then missed, loaded the row from the replica, which
had not replayed the commit yet, and cached the old row until its TTL. A fill lease
cannot see this (the fill starts after the invalidation, and nothing revokes it), and a
fixed "delayed second delete" guesses the lag.

So the worker keeps each applied batch's keys and tags with the primary's WAL position
after it (every change of the batch committed before it), and applies them again once
every standby streaming from the primary reports a replay position past it
(``pg_stat_replication.replay_lsn``, read on the worker's own connection: no connection
to the standbys). A reader that loads after that sees the new row. Deletes and tag
invalidations are idempotent, so the second pass only costs its round trips, and only
where standbys exist; nothing is kept while there are none. Pending passes are merged
when they pile up (a standby minutes behind): their keys and tags as sets, under the
latest position, so memory stays bounded by the distinct keys changed meanwhile.

A standby's ``replay_lsn`` is shown only to roles with ``pg_read_all_stats`` (or
``pg_monitor``, or superuser); without it the worker cannot tell when a standby has
caught up, says so once, and applies the second pass after :attr:`ReplicaEcho.
blind_delay` seconds instead. A standby that does not stream from this primary (a
cascading one, a logical replica) is not seen.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.invalidation.batch import BatchResult
from thorbis_cache.invalidation.tag_lanes import TagInvalidator, apply_again
from thorbis_cache.postgres.logical import parse_lsn

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache

__all__ = ["ReplicaEcho"]

log = logging.getLogger(__name__)

# Physical standbys only: a logical walsender (the worker's own slot, or another
# subscriber) is connected to a database; a standby's walsender is not.
_STANDBYS = """
SELECT r.application_name, r.replay_lsn::text AS replay
  FROM pg_catalog.pg_stat_replication r
  JOIN pg_catalog.pg_stat_activity a ON a.pid = r.pid
 WHERE a.datname IS NULL
"""


@attrs.define
class _Pass:
    """Invalidations to apply again once the standbys have replayed ``lsn``."""

    lsn: int
    at: float
    keys: set[str]
    tags: dict[str, set[str]]


class ReplicaEcho:
    """A worker's second pass of each batch's invalidations, once the standbys caught up
    (see the module).

    :param cache: the cache the worker invalidates.
    :param invalidate_tags: how the worker invalidates tags.
    :param look_every: seconds between two looks for standbys while none is known.
    :param blind_delay: seconds after which a pass is applied when the standbys'
        positions cannot be read.
    :param max_pending: passes kept separately before they are merged.
    """

    def __init__(self, cache: Cache, invalidate_tags: TagInvalidator, *,
                 look_every: float = 1.0, blind_delay: float = 2.0,
                 max_pending: int = 256) -> None:
        self.cache = cache
        self.invalidate_tags = invalidate_tags
        self.look_every = look_every
        self.blind_delay = blind_delay
        self.max_pending = max_pending
        self._pending: list[_Pass] = []
        self._standbys = False
        self._next_look = 0.0
        self._blind_said = False

    @property
    def pending(self) -> int:
        """Passes waiting for the standbys."""
        return len(self._pending)

    async def after_batch(self, conn: Any, result: BatchResult) -> None:
        """Keep ``result``'s invalidations for a second pass, if the primary has
        standbys (looked for at most every :attr:`look_every` seconds while none is)."""
        if not result.keys and not result.tags:
            return
        now = time.monotonic()
        if not self._standbys and now < self._next_look:
            return
        if not self._standbys:
            self._next_look = now + self.look_every
            self._standbys = bool(await conn.fetch(_STANDBYS))
            if not self._standbys:
                return
        lsn = parse_lsn(await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"))
        tags: dict[str, set[str]] = defaultdict(set)
        for tenant, tag in result.tags:
            tags[tenant].add(tag)
        self._pending.append(_Pass(lsn, now, set(result.keys), tags))
        if len(self._pending) > self.max_pending:
            self._merge()

    def _merge(self) -> None:
        merged = _Pass(self._pending[-1].lsn, self._pending[0].at, set(), defaultdict(set))
        for p in self._pending:
            merged.keys |= p.keys
            for tenant, tags in p.tags.items():
                merged.tags[tenant] |= tags
        self._pending = [merged]

    async def settle(self, conn: Any) -> int:
        """Apply the passes every standby has replayed past (or, when their positions
        cannot be read, those older than :attr:`blind_delay`); returns how many.

        :raises RedisUnavailableError: Redis cannot be reached (the passes stay).
        """
        if not self._pending:
            return 0
        rows = await conn.fetch(_STANDBYS)
        if not rows:
            self._standbys = False
            self._next_look = time.monotonic() + self.look_every
            # No standby any more: nobody can read an older row than the primary's.
            self._pending.clear()
            return 0
        replays = [r["replay"] for r in rows]
        if any(r is None for r in replays):
            if not self._blind_said:
                self._blind_said = True
                role = await conn.fetchval("SELECT current_user")
                log.warning(
                    "the worker cannot read how far the standbys have replayed (role %r "
                    "lacks pg_read_all_stats): invalidations are applied again %.1f s "
                    "after their batch instead of once every standby has replayed it; "
                    "GRANT pg_read_all_stats TO %s", role, self.blind_delay, role)
            cutoff = time.monotonic() - self.blind_delay
            due = [p for p in self._pending if p.at <= cutoff]
        else:
            replayed = min(parse_lsn(r) for r in replays)
            due = [p for p in self._pending if p.lsn <= replayed]
        for p in due:
            await apply_again(self.cache, self.invalidate_tags, p.keys, p.tags)
            self._pending.remove(p)  # one by one: a failure keeps those not applied
        return len(due)
