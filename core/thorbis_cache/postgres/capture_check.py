"""Is every invalidation rule's table captured? The check that catches silent staleness.

After ``thorbis-cache db migrate`` without ``db init`` the rules exist but nothing
captures changes: an UPDATE writes no outbox row, the worker applies nothing, and cached
entries stay stale until their TTL. :func:`check_capture` finds that before it happens;
the worker (:meth:`~thorbis_cache.invalidation.worker.OutboxWorker.check_capture`, run by ``run``,
``drain`` and the CLI) and :meth:`CacheApp.start <thorbis_cache.app.CacheApp.start>`
(when given a DSN) refuse to start on it.

What counts as installed, per table some rule names:

* trigger capture: enabled triggers on the table, and on each of its partitions, that run
  a function of the ``thorbis`` schema (whatever their names: ``triggers.py`` owns those)
  and together fire on every operation the table's rules handle; and made for rules
  that need no more than they record (``thorbis.captured_tables``: the columns written,
  and the UPDATEs recorded, every one or only those that change one of the
  significant columns). A release started before its ``db init`` ran found the
  earlier release's triggers there, and the UPDATEs only its new rules watch went
  uncaptured;
* logical capture: the slot or its publication exists in this database, and the
  publication includes the table. A slot lost (invalidated, dropped, or not carried
  over by a failover) with its publication here, or a publication dropped with its
  slot here, is not refused: the slot's reader flushes what the lost changes may have
  made stale and makes both again, and health's ``capture_slot`` says it is lost;
* either (``capture="any"``, the app's check, which does not know how its workers read):
  one of the two, the publication being any ``thorbis_*`` one. A table that neither
  captures is named as missing from the publications where logical capture is set up.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from thorbis_cache.errors import CaptureNotInstalledError
from thorbis_cache.plugins.declarations import InvalidationRule, Operation
from thorbis_cache.postgres.capture_ddl import (
    EVENT_BITS,
    SLOT_MADE,
    captured_readable,
    relids_of,
)

if TYPE_CHECKING:
    from thorbis_cache.postgres.logical import LogicalCapture

__all__ = ["auto_follows", "capture_problems", "check_capture", "fix_command"]

log = logging.getLogger(__name__)


# Each table and each of its partitions (a statement naming a partition fires the
# partition's triggers only), with the events their capture triggers fire on.
_TRIGGER_EVENTS = """
SELECT c.relid AS root, r.relid AS relid, r.relid::regclass::text AS name,
       coalesce(bit_or(t.tgtype::int), 0) AS events
FROM unnest($1::oid[]) AS c(relid)
CROSS JOIN LATERAL (SELECT c.relid UNION
                    SELECT p.relid FROM pg_catalog.pg_partition_tree(c.relid) AS p) AS r(relid)
LEFT JOIN pg_catalog.pg_trigger t
       ON t.tgrelid = r.relid AND NOT t.tgisinternal AND t.tgenabled <> 'D'
      AND t.tgfoid IN (SELECT p.oid FROM pg_catalog.pg_proc p
                       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = 'thorbis')
GROUP BY c.relid, r.relid
ORDER BY name
"""

# Tables of the publications (named pubname, or any thorbis_* one when $1 is NULL). A
# publication whose slot is lost still counts: the worker flushes for what the slot lost
# and makes it again (invalidation/slot_reader.py); health's capture_slot says it is lost.
_PUBLISHED = """
SELECT DISTINCT to_regclass(format('%I.%I', pt.schemaname, pt.tablename))::oid
FROM pg_catalog.pg_publication_tables pt
JOIN pg_catalog.pg_publication p ON p.pubname = pt.pubname
WHERE CASE WHEN $1::text IS NULL THEN pt.pubname LIKE 'thorbis\\_%' ELSE pt.pubname = $1 END
  AND (EXISTS (SELECT FROM pg_catalog.pg_replication_slots s
                WHERE s.slot_name = pt.pubname AND s.database = current_database())
       OR obj_description(p.oid, 'pg_publication') = $2)
"""

# The logical captures' publications in this database.
_PUBLICATIONS = """
SELECT pubname FROM pg_catalog.pg_publication WHERE pubname LIKE 'thorbis\\_%' ORDER BY 1
"""

# What each table's capture triggers were made for (core 013); a stand-in capture in
# place after a migration (incomplete, retyped, recreated) is not checked against it.
_RECORDED = """
SELECT table_name, columns || key_columns AS columns, update_filter
FROM thorbis.captured_tables
WHERE table_name = ANY ($1::text[]) AND update_filter IS NOT NULL
  AND incomplete IS NULL AND retyped IS NULL AND NOT recreated
"""

# Before core 013 nothing says which UPDATEs the triggers record.
_FILTER_RECORDED = """
SELECT true FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'thorbis' AND c.relname = 'captured_tables'
  AND a.attname = 'update_filter' AND NOT a.attisdropped
"""


async def _filters_readable(conn: Any) -> bool:
    """Whether the triggers' filters are recorded and this role may read them. Found as
    a user would: a host application whose role has rights on its own tables only (as
    least privilege asks) failed to start with "permission denied for schema thorbis";
    it checks what the catalogs show, and the worker, which reads the outbox, checks
    the rest."""
    if not await captured_readable(conn):
        log.info("the capture check cannot read thorbis.captured_tables as this role "
                 "(GRANT USAGE ON SCHEMA thorbis and SELECT ON thorbis.captured_tables to "
                 "it for the full check): whether the capture triggers were made for "
                 "these rules is checked by the worker")
        return False
    return bool(await conn.fetchval(_FILTER_RECORDED))




async def capture_problems(conn: Any, rules: Iterable[InvalidationRule],
                           capture: LogicalCapture | Literal["triggers", "any"] = "triggers"
                           ) -> list[str]:
    """One line per ruled table whose changes are not captured, naming the table, its
    rules and what is missing; empty when every table is captured.

    :param conn: an asyncpg connection.
    :param rules: the invalidation rules (``app.plugins.all_rules()``).
    :param capture: ``"triggers"``, a :class:`~thorbis_cache.postgres.logical.LogicalCapture`
        (its slot and publication), or ``"any"`` (see the module).
    """
    by_table: dict[str, list[InvalidationRule]] = defaultdict(list)
    for rule in rules:
        by_table[rule.table].append(rule)
    if not by_table:
        return []
    tables = sorted(by_table)
    logical = None if isinstance(capture, str) else capture
    if logical is not None:
        if not await logical.set_up_here(conn):
            return [f"{table} (rules {_names(by_table[table])}): replication slot "
                    f"{logical.slot} does not exist in this database" for table in tables]
        if not await logical.publication_here(conn):
            # Dropped while its slot is here: the changes since cannot be decoded, and
            # the slot's reader flushes for them and makes both again.
            return []
    # By oid: a table a migration renamed is still the table its rules name.
    relids = await relids_of(conn, tables)
    published: set[int] = set()
    publications: list[str] = []
    if capture != "triggers":
        published = {r[0] for r in await conn.fetch(
            _PUBLISHED, None if logical is None else logical.publication, SLOT_MADE)}
        if logical is None:
            publications = [r[0] for r in await conn.fetch(_PUBLICATIONS)]
    events: dict[int, int] = {}
    partitions: dict[int, list[tuple[str, int]]] = defaultdict(list)
    if logical is None:
        for root, relid, name, bits in await conn.fetch(
                _TRIGGER_EVENTS, [oid for oid in relids.values() if oid is not None]):
            if root == relid:
                events[root] = bits
            else:
                partitions[root].append((name, bits))
    problems = []
    for table in tables:
        relid = relids[table]
        if relid is not None and relid in published:
            continue
        if logical is not None:
            problems.append(f"{table} (rules {_names(by_table[table])}): not in "
                            f"publication {logical.publication}")
            continue
        if relid is None:
            problems.append(f"{table} (rules {_names(by_table[table])}): the table "
                            "does not exist")
            continue
        needed = {op for r in by_table[table] for op in r.operations}
        for name, bits in [("", events[relid]), *partitions[relid]]:
            missing = sorted(op.value for op in needed if not bits & EVENT_BITS[op])
            if missing:
                what = "no capture trigger" if not bits else "no capture trigger for"
                detail = "" if not bits else f" {', '.join(missing)}"
                where = f"partition {name} has " if name else ""
                # Where logical capture is set up, its publication is what is missing.
                unpublished = (f"not in publication {', '.join(publications)}, and "
                               if publications and not name and not bits else "")
                problems.append(f"{table} (rules {_names(by_table[table])}): "
                                f"{unpublished}{where}{what}{detail}")
    if logical is None and await _filters_readable(conn):
        covered = [t for t in tables if relids[t] is not None and relids[t] not in published]
        for row in await conn.fetch(_RECORDED, covered):
            table = row["table_name"]
            lacking = _not_covered(by_table[table], row["columns"], row["update_filter"])
            if lacking:
                problems.append(f"{table} (rules {_names(by_table[table])}): the capture "
                                f"triggers were made for other rules: {'; '.join(lacking)}")
    return problems


def _not_covered(rules: Sequence[InvalidationRule], columns: Sequence[str],
                 update_filter: Sequence[str]) -> list[str]:
    """What ``rules`` need that capture triggers writing ``columns`` (the key among
    them), and recording the UPDATEs that change one of ``update_filter`` (every
    UPDATE: empty), do not give."""
    lacking = []
    if update_filter:
        recorded = ", ".join(sorted(update_filter))
        for rule in sorted(rules, key=lambda r: r.name):
            if Operation.UPDATE not in rule.operations:
                continue
            if not rule.significant_columns:
                lacking.append(f"they record an UPDATE only when one of {recorded} "
                               f"changes, and rule {rule.name} needs every UPDATE")
                continue
            missing = sorted(set(rule.update_columns()) - set(update_filter))
            if missing:
                lacking.append(f"they record an UPDATE only when one of {recorded} "
                               f"changes, and rule {rule.name} needs UPDATEs of "
                               f"{', '.join(missing)}")
    for rule in sorted(rules, key=lambda r: r.name):
        missing = sorted(rule.columns_read() - set(columns))
        if missing:
            lacking.append(f"they do not write {', '.join(missing)}, which rule "
                           f"{rule.name} reads")
    return lacking


async def auto_follows(conn: Any, logical: LogicalCapture,
                       rules: Iterable[InvalidationRule]) -> bool:
    """Whether a worker of ``capture="auto"`` reads ``logical``: its slot is here, or
    it was lost (:meth:`~thorbis_cache.postgres.logical.LogicalCapture.lost_here`) while
    the capture triggers do not capture every one of ``rules``' tables (where they do,
    the outbox is the capture: a lost slot's reader would flush every tenant, retire,
    and be followed again)."""
    if await logical.slot_here(conn):
        return True
    return await logical.lost_here(conn) and bool(
        await capture_problems(conn, rules, "triggers"))


def fix_command(plugins: Sequence[str] = (), logical: LogicalCapture | None = None) -> str:
    """The ``thorbis-cache db init`` command line that installs the capture."""
    words = ["thorbis-cache db init"]
    words += [f"--plugin {name}" for name in plugins]
    if logical is not None:
        words.append(f"--capture logical --slot {logical.name.removeprefix('thorbis_')}")
    return " ".join(words)


async def check_capture(conn: Any, rules: Iterable[InvalidationRule],
                        capture: LogicalCapture | Literal["triggers", "any"] = "triggers",
                        *, plugins: Sequence[str] = ()) -> None:
    """Refuse when :func:`capture_problems` finds any.

    :param plugins: the plugins whose rules these are, for the fix command.
    :raises CaptureNotInstalledError: naming each table, its rules, and the command.
    """
    problems = await capture_problems(conn, rules, capture)
    if problems:
        logical = None if isinstance(capture, str) else capture
        raise CaptureNotInstalledError(problems, fix_command(plugins, logical))


def _names(rules: Sequence[InvalidationRule]) -> str:
    return ", ".join(sorted(r.name for r in rules))
