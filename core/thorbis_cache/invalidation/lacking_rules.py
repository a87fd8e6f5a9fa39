"""The rules the database's capture was set up for that a worker does not have, and
what it applies in their place (:mod:`thorbis_cache.postgres.rules_record`).

A worker of an earlier release, still reading changes after the new release's
``db init`` (a rolling deploy), reads the record with every batch. Each recorded rule
it lacks is applied through a stand-in: for the change's tenant, every tag the rule's
targets reach. It says which rules, once per record, and
``thorbis_cache_worker_lacking_rules`` counts them until it runs the release that has
them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from thorbis_cache.plugins.declarations import InvalidationRule
from thorbis_cache.postgres.rules_record import (
    RecordedRule,
    lacking,
    record_readable,
    record_version,
    recorded_rules,
)

if TYPE_CHECKING:
    from thorbis_cache.cache.registry import SchemaRegistry

__all__ = ["LackingRules", "RulesChanged"]

log = logging.getLogger(__name__)


class RulesChanged(Exception):
    """Raised in a batch's transaction once it is applied: the rules record changed what
    the worker applies, so the batch is rolled back and read (claimed) again, nothing
    of it confirmed."""


class LackingRules:
    """What one worker lacks of the database's rules record.

    :param own: the worker's own rules.
    :param registry: the worker's cache's schemas (its rules' digests read them).
    """

    def __init__(self, own: list[InvalidationRule], registry: SchemaRegistry) -> None:
        self._own = own
        self._registry = registry
        self._version: str | None = None
        self._kept_by: Any = None  # the connection that found the record's table
        self._refused_said = False
        #: the recorded rules the worker lacks, as last read
        self.rules: tuple[RecordedRule, ...] = ()
        #: what the worker applies in their place
        self.stand_ins: tuple[InvalidationRule, ...] = ()

    async def changed(self, conn: Any) -> bool:
        """Read the record (one short query when it is unchanged); True when what the
        worker lacks changed, and :attr:`stand_ins` with it. A database without the
        record (not migrated yet) has nothing for it to lack."""
        if self._kept_by is not conn:
            # Once per connection: a database migrated since has the table from then on.
            readable = await record_readable(conn)
            if not readable:
                if readable is False and not self._refused_said:
                    # Not a failure of every batch: the worker goes on without it.
                    self._refused_said = True
                    log.error("invalidation worker: its role may not read "
                              "thorbis.capture_rules: rules a newer release's db init "
                              "recorded are not applied by this worker (GRANT SELECT ON "
                              "thorbis.capture_rules TO %s)",
                              await conn.fetchval("SELECT current_user"))
                return False
            self._kept_by = conn
        version = await record_version(conn)
        if version == self._version:
            return False
        self._version = version
        found = tuple(lacking(await recorded_rules(conn), self._own, self._registry))
        if found == self.rules:
            return False
        self.rules = found
        self.stand_ins = tuple(r.stand_in() for r in found if r.tags)
        self._say(found)
        return True

    def _say(self, found: tuple[RecordedRule, ...]) -> None:
        if not found:
            log.warning("invalidation worker: it has every rule the database's capture "
                        "was set up for again")
            return
        tags = sorted({tag for r in found for tag in r.tags})
        log.warning("invalidation worker: db init set the capture up for %d rule(s) this "
                    "worker does not have (or has in another version): %s. Their "
                    "changes invalidate, for the changed row's tenant, every tag their "
                    "targets reach (%s) until this worker runs the release that has "
                    "them (rules a release removed stay recorded until `thorbis-cache "
                    "db init --prune`)", len(found), ", ".join(r.name for r in found),
                    ", ".join(tags) or "none")
        untagged = sorted({schema for r in found for schema in r.untagged})
        if untagged:
            log.error("invalidation worker: schema(s) %s, targeted by rules this worker "
                      "does not have, carry no tag: their entries are not invalidated "
                      "until it runs the release that has the rules", ", ".join(untagged))

