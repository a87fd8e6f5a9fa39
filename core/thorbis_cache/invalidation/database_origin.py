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
keeps, beside its entries, the origin of the database its worker last read
(:meth:`DatabaseOrigin.key`, one Redis string per database name, no TTL): the cluster's
system identifier, the database's oid and the timeline. The record lives and dies with
the entries it vouches for (a Redis that lost its data lost both). Each new worker
connection compares. A different timeline means the database may have lost commits
the cache saw; so does a different oid (found as a user would: last night's logical
backup restored the usual way, the database dropped and created again under its name,
rewound the rows on the same cluster and timeline) and a different system identifier
(a restore, or a dump and restore, into another cluster; a major upgrade with
``pg_upgrade`` too, which costs one flush). Nothing can say which commits: the worker
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
    :ivar oid: the database's oid (a database dropped and created again gets another).
    :ivar timeline: the timeline being written (1 after ``initdb``, one more at each
        promotion or point-in-time recovery).
    """

    system: str
    database: str
    oid: int
    timeline: int

    def key(self, prefix: str) -> str:
        """The Redis key that records the origin this cache reflects."""
        return f"{prefix}:~pg_origin:{self.database}"

    def legacy_key(self, prefix: str) -> str:
        """Where earlier builds kept the timeline alone (read once, then
        replaced by :meth:`key`)."""
        return f"{prefix}:~pg_timeline:{self.system}:{self.database}"

    def record(self) -> str:
        """The value kept under :meth:`key`: ``system/oid/timeline``."""
        return f"{self.system}/{self.oid}/{self.timeline}"

    def change_from(self, recorded: bytes | str) -> str | None:
        """What differs from a recorded origin (:meth:`record`), said for the log, or
        None when nothing does."""
        text = recorded.decode(errors="replace") if isinstance(recorded, bytes) else recorded
        parts = text.split("/")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return f"the cache holds {text[:60]!r} where its origin should be"
        system, oid, timeline = parts[0], int(parts[1]), int(parts[2])
        if system != self.system:
            return (f"it is in another cluster (system {self.system}, the cache reflects "
                    f"system {system}): restored, or upgraded, into a new one")
        if oid != self.oid:
            return (f"it was created again under its name (oid {self.oid}, the cache "
                    f"reflects oid {oid}): restored from a backup")
        if timeline != self.timeline:
            return (f"it is on timeline {self.timeline}, the cache reflects timeline "
                    f"{timeline}: it failed over or was restored to a point in time")
        return None


async def origin_of(conn: asyncpg.Connection) -> DatabaseOrigin | None:
    """The origin of the database ``conn`` is connected to, or None where the server
    does not say (a service that hides its control data and WAL file names)."""
    try:
        system = await conn.fetchval("SELECT system_identifier::text FROM pg_control_system()")
        database, oid = await conn.fetchrow(
            "SELECT datname, oid::bigint FROM pg_database WHERE datname = current_database()")
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
            return DatabaseOrigin(str(system), str(database), int(oid), int(timeline))
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
        prefix = self.cache.settings.prefix
        key = origin.key(prefix)
        recorded = await store.command("GET", key)
        legacy = None
        change = None
        if recorded is not None:
            change = origin.change_from(recorded)
        else:
            # An origin kept by an older version: its timeline alone.
            legacy = await store.command("GET", origin.legacy_key(prefix))
            if legacy is not None and legacy != str(origin.timeline).encode():
                change = origin.change_from(f"{origin.system}/{origin.oid}/"
                                            f"{legacy.decode(errors='replace')}")
        report = None
        if change is not None:
            log.error("database %s: %s (%s); commits the cache saw may be lost: flushing "
                      "what no change can now prove fresh", origin.database, change, key)
            rules = self.rules()
            tables = tuple(sorted({rule.table for rule in rules}))
            report = await flush_after_capture_loss(self.cache, rules, tables,
                                                    self.invalidate_tags)
        if recorded is None or report is not None:
            await store.run(_RECORD, [key], [origin.record()])
            if legacy is not None:
                await store.command("UNLINK", origin.legacy_key(prefix))
        return report
