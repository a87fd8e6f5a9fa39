"""The database history a cache reflects: a failover or a restore that rewound it.

Found as a user would, with a real streaming standby: PostgreSQL's usual HA (Patroni, a
managed service's failover, a hand-promoted standby) replicates asynchronously, so the
commits an old primary made in its last moments may never reach the standby it fails
over to. A reader that filled the cache from such a commit (the old primary served it)
leaves an entry for a row state that no longer exists, and no change will ever come
for it: under capture triggers the worker went on with the new primary's outbox as if
nothing had happened. A point-in-time restore rewinds the database the same way. (Under
logical capture the slot does not survive a promotion in PostgreSQL 15, and a lost slot
already flushes; a slot copied to the standby, as Patroni's permanent slots do, would
not, and this check covers that too.)

Every promotion and every point-in-time recovery starts a new *timeline*. So the cache
keeps, beside its entries, the timeline of the database its worker last read
(:meth:`DatabaseOrigin.key`, one Redis string per database system and name, no TTL):
the record lives and dies with the entries it vouches for (a Redis that lost its data
lost both). Each new worker connection compares; a different timeline means the
database may have lost commits the cache saw, and nothing can say which: the worker
flushes what a lost slot flushes (:func:`~thorbis_cache.invalidation.capture_loss.
flush_after_capture_loss`: every tag the rules reach, for every tenant), counts it as a
capture loss, and only then records the new timeline (a worker killed in between
flushes again). A planned switchover changes the timeline too and costs the same one
flush: the commits were all there, but a cache cannot prove it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import attrs

from thorbis_cache.invalidation.capture_loss import CaptureLossReport, flush_after_capture_loss
from thorbis_cache.store.scripts import Script, load_lua

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.plugins.declarations import InvalidationRule

__all__ = ["DatabaseOrigin", "OriginCheck", "origin_of"]

log = logging.getLogger(__name__)

# The timeline of the WAL being written now: the first 8 hex digits of its segment's
# name (pg_control_checkpoint() would lag until the promoted server's first checkpoint).
_TIMELINE_NOW = "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))" \
                "::bit(32)::int"
_TIMELINE_AT_CHECKPOINT = "SELECT timeline_id FROM pg_control_checkpoint()"

_RECORD = Script("pg_timeline", load_lua("pg_timeline"))


@attrs.frozen(slots=True)
class DatabaseOrigin:
    """Which database, and which of its histories.

    :ivar system: the cluster's system identifier (from ``initdb``; a standby shares
        its primary's).
    :ivar database: the database's name.
    :ivar timeline: the timeline being written (1 after ``initdb``, one more at each
        promotion or point-in-time recovery).
    """

    system: str
    database: str
    timeline: int

    def key(self, prefix: str) -> str:
        """The Redis key that records the timeline this cache reflects."""
        return f"{prefix}:~pg_timeline:{self.system}:{self.database}"


async def origin_of(conn: asyncpg.Connection) -> DatabaseOrigin | None:
    """The origin of the database ``conn`` is connected to, or None where the server
    does not say (a service that hides its control data and WAL file names)."""
    try:
        system = await conn.fetchval("SELECT system_identifier::text FROM pg_control_system()")
        database = await conn.fetchval("SELECT current_database()")
    except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError,
            asyncpg.FeatureNotSupportedError):
        return None
    for query in (_TIMELINE_NOW, _TIMELINE_AT_CHECKPOINT):
        try:
            timeline = await conn.fetchval(query)
        except (asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError,
                asyncpg.FeatureNotSupportedError, asyncpg.ObjectNotInPrerequisiteStateError):
            continue
        if timeline is not None:
            return DatabaseOrigin(str(system), str(database), int(timeline))
    return None


class OriginCheck:
    """A worker's check, on each new connection, that the database was not rewound
    since the cache last heard from it (see the module doc).

    :param cache: the cache whose entries are flushed, and where the timeline is kept.
    :param rules: the worker's rules (a rewind flushes every tag they reach).
    :param invalidate_tags: how the worker invalidates tags.
    """

    def __init__(self, cache: Cache, rules: Callable[[], Sequence[InvalidationRule]],
                 invalidate_tags: Callable[[str, Sequence[str]], Awaitable[Any]]) -> None:
        self.cache = cache
        self.rules = rules
        self.invalidate_tags = invalidate_tags
        self._unknown_said = False

    async def check(self, conn: asyncpg.Connection) -> CaptureLossReport | None:
        """Compare the database's timeline with the one the cache reflects; after a
        change, flush and report; record the timeline either way.

        :returns: the flush's report, or None when nothing was flushed.
        :raises RedisUnavailableError: Redis cannot be reached (call again: idempotent).
        """
        origin = await origin_of(conn)
        if origin is None:
            if not self._unknown_said:
                self._unknown_said = True
                log.warning("the database does not say its system identifier or timeline: "
                            "a failover that loses commits will not be noticed, and entries "
                            "filled from those commits stay until their TTL")
            return None
        store = self.cache.store
        key = origin.key(self.cache.settings.prefix)
        recorded = await store.command("GET", key)
        report = None
        if recorded is not None and _timeline(recorded) != origin.timeline:
            log.error("database %s (system %s) is on timeline %d, the cache reflects "
                      "timeline %r (%s): it failed over or was restored, and commits the "
                      "cache saw may be lost; flushing what no change can now prove fresh",
                      origin.database, origin.system, origin.timeline,
                      _timeline(recorded) or recorded, key)
            rules = self.rules()
            tables = tuple(sorted({rule.table for rule in rules}))
            report = await flush_after_capture_loss(self.cache, rules, tables,
                                                    self.invalidate_tags)
        if recorded is None or report is not None:
            await store.run(_RECORD, [key], [origin.timeline])
        return report


def _timeline(recorded: bytes | str) -> int | None:
    """A recorded timeline, or None for a value that is not one (anything else found
    under the key counts as a different timeline)."""
    try:
        return int(recorded)
    except ValueError:
        return None
