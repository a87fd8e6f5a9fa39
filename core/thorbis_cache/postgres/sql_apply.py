"""Apply plugins' SQL to PostgreSQL, and check their rules against the real schema.

Each plugin's scripts and then its materialized views are applied in one transaction
of their own, statement by statement (:func:`split_sql`), so a failure names the
statement and PostgreSQL's message, and rolls back everything of that plugin. A view
whose declared definition changed (its fingerprint comment differs) is recreated. This is
the one seam where ``asyncpg`` errors of plugin SQL become
:class:`~thorbis_cache.errors.PluginLoadError`.

A setup (:func:`apply_and_check`) applies a plugin's SQL only when it differs from what
the database holds: the digest of its scripts and views (:func:`sql_digest`) is recorded
in ``thorbis.plugin_sql`` (``sql/core/012_plugin_sql.sql``) when they are applied, and a
plugin recorded with the same digest, whose views are all there as declared, is left
alone. Idempotent DDL still takes table locks, so applying unchanged SQL at every app
start made every start wait for the host's open transactions on those tables.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import attrs
from packaging.version import InvalidVersion, Version

from thorbis_cache.errors import PluginLoadError, PluginProblem
from thorbis_cache.postgres import connection
from thorbis_cache.postgres.catalog import USABLE_UNIQUE_INDEX, quote_qualified
from thorbis_cache.postgres.ddl_locks import bound_locks, with_lock_retries

if TYPE_CHECKING:
    from thorbis_cache.plugins.declarations import LoadedPlugin, MaterializedView

__all__ = ["SqlApplied", "apply_and_check", "apply_plugin_sql", "check_rules_against_db",
           "split_sql", "sql_digest"]

log = logging.getLogger(__name__)

#: Shown of a failing statement in an error message.
STATEMENT_SHOWN = 200

# Serializes plugin DDL across processes that start at once: two concurrent
# `CREATE TABLE IF NOT EXISTS` of one table can still fail on pg_type's unique index.
_APPLY_LOCK = "SELECT pg_advisory_xact_lock(hashtext('thorbis_cache.plugin_sql'))"

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")


# --------------------------------------------------------------------------- splitting


def split_sql(script: str) -> list[str]:
    """Split ``script`` into statements at the semicolons that end them.

    Semicolons inside single-quoted strings (``''`` escapes; backslash escapes in
    ``E'...'``), double-quoted identifiers, dollar-quoted bodies (``$$...$$``,
    ``$tag$...$tag$``), ``--`` comments and nested ``/* */`` comments do not split.
    Statements are stripped; pieces holding only comments and blanks are dropped.
    SQL-standard function bodies (``BEGIN ATOMIC ... END``) are not understood: write
    function bodies dollar-quoted.

    :param script: one or more SQL statements.
    :returns: the statements, without their terminating semicolons.
    """
    statements: list[str] = []
    start = i = 0
    n = len(script)
    code = False  # whether the current piece holds anything but comments and blanks
    while i < n:
        c = script[i]
        if c == "-" and script.startswith("--", i):
            end = script.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and script.startswith("/*", i):
            i = _skip_block_comment(script, i)
        elif c == "'":
            escapes = i > 0 and script[i - 1] in "Ee" and not _word_before(script, i - 1)
            i = _skip_quoted(script, i, "'", escapes)
            code = True
        elif c == '"':
            i = _skip_quoted(script, i, '"', False)
            code = True
        elif c == "$" and not _word_before(script, i) and (m := _DOLLAR_TAG.match(script, i)):
            end = script.find(m.group(), m.end())
            i = n if end < 0 else end + len(m.group())
            code = True
        elif c == ";":
            if code:
                statements.append(script[start:i].strip())
            start = i = i + 1
            code = False
        else:
            code = code or not c.isspace()
            i += 1
    if code:
        statements.append(script[start:].strip())
    return statements


def _word_before(text: str, i: int) -> bool:
    """Whether ``text[i]`` continues an identifier (so it starts no token of its own)."""
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")


def _skip_quoted(text: str, i: int, quote: str, backslash: bool) -> int:
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if backslash and c == "\\":
            j += 2
        elif c == quote:
            if j + 1 < n and text[j + 1] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return n


def _skip_block_comment(text: str, i: int) -> int:
    depth = 0
    n = len(text)
    while i < n:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


# --------------------------------------------------------------------------- applying


async def apply_plugin_sql(dsn_or_conn: str | asyncpg.Connection,
                           plugins: Sequence[LoadedPlugin]) -> None:
    """Apply each plugin's SQL scripts, then its materialized views.

    One transaction per plugin: a failing statement rolls back that plugin's SQL; the
    other plugins are still applied, and every failure is reported at once.

    :param dsn_or_conn: a PostgreSQL DSN (a connection is opened and closed) or an open
        ``asyncpg`` connection; inside a transaction, each plugin's SQL is a savepoint
        of it, and nothing commits before that transaction does.
    :param plugins: the plugins, in load order.
    :raises PluginLoadError: one problem per failed plugin, of hook ``register_sql`` or
        ``register_materialized_views``, naming the script or view, the statement
        (first :data:`STATEMENT_SHOWN` characters) and PostgreSQL's message.
    """
    if isinstance(dsn_or_conn, str):
        conn = await connection.connect(dsn_or_conn, writes="applying the plugins' SQL")
        try:
            await apply_plugin_sql(conn, plugins)
        finally:
            await conn.close()
        return
    problems: list[PluginProblem] = []
    for plugin in plugins:
        problem = await _apply_one(dsn_or_conn, plugin)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise PluginLoadError(problems)


async def _apply_one(conn: Any, plugin: LoadedPlugin) -> PluginProblem | None:
    steps = [("register_sql", f"SQL script {s.name!r}", stmt)
             for s in plugin.sql for stmt in split_sql(s.sql)]
    if not steps and not plugin.views:
        return None
    hook, what, statement = steps[0] if steps else ("register_materialized_views", "", "")
    try:
        async with conn.transaction():
            await conn.execute(_APPLY_LOCK)
            for hook, what, statement in steps:  # noqa: B007 -- the failing step is reported
                await conn.execute(statement)
            # Views after the scripts (they read the tables); the steps depend on what the
            # database holds, so they are planned inside the transaction, under the lock.
            hook = "register_materialized_views"
            for view in plugin.views:
                what = f"materialized view {view.name!r}"
                for statement in await _view_steps(conn, view):
                    await conn.execute(statement)
    except asyncpg.LockNotAvailableError:
        raise  # not the plugin's fault: apply_and_check tries again
    except asyncpg.PostgresError as exc:
        shown = " ".join(statement.split())
        if len(shown) > STATEMENT_SHOWN:
            shown = shown[:STATEMENT_SHOWN] + "..."
        return PluginProblem(
            plugin.name, hook, f"{what}: statement failed: {shown!r}: {_pg_message(exc)}",
            plugin.distribution, plugin.version,
        )
    return None


_VIEW_COMMENT = """
SELECT c.relkind::text AS kind, obj_description(c.oid, 'pg_class') AS comment
FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1)
"""


async def _view_steps(conn: Any, view: MaterializedView) -> list[str]:
    """The statements that make ``view`` match its declaration.

    A view is created with its definition fingerprint
    (:attr:`MaterializedView.definition_id`) as its comment. An existing view with the
    same fingerprint is left alone; one with another fingerprint, or none (created
    before fingerprints, or by hand), was defined differently: it is dropped and created
    again (populated, with its indexes) in the plugin's transaction. A view another
    object depends on is not dropped: PostgreSQL refuses, and the failure names it.
    After a recreation the view's cache tags are marked pending (``thorbis.mv_state``),
    so the scheduler invalidates entries built from the old definition.
    """
    found = await conn.fetchrow(_VIEW_COMMENT, view.name)
    quoted = quote_qualified(view.name)
    if _as_declared(found, view):
        return view.create_sql()  # all IF NOT EXISTS: nothing changes
    steps = []
    if found is not None and found["kind"] == "m":
        steps.append(f"DROP MATERIALIZED VIEW {quoted}")
    steps += view.create_sql()
    steps.append(f"COMMENT ON MATERIALIZED VIEW {quoted} IS '{view.definition_id}'")
    if found is not None and await conn.fetchval(
            "SELECT to_regclass('thorbis.mv_state') IS NOT NULL"):
        steps.append(
            "UPDATE thorbis.mv_state SET tags_pending = true "  # noqa: S608 -- quoted below
            f"WHERE view = '{view.name.replace(chr(39), chr(39) * 2)}'")
    return steps


def _as_declared(found: Any, view: MaterializedView) -> bool:
    """Whether ``found`` (a :data:`_VIEW_COMMENT` row, or None) is ``view`` as declared:
    a materialized view carrying its definition's fingerprint."""
    return found is not None and found["kind"] == "m" and \
        found["comment"] == view.definition_id


def _pg_message(exc: Any) -> str:
    """PostgreSQL's message with its SQLSTATE, detail and hint."""
    parts = [f"PostgreSQL {exc.sqlstate or 'error'}: {exc.args[0] if exc.args else exc}"]
    for field in ("detail", "hint"):
        value = getattr(exc, field, None)
        if value:
            parts.append(f"{field}: {value}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- checking

_RELATIONS = """
SELECT n.nspname || '.' || c.relname AS name,
       c.relkind::text AS kind,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum)
                FILTER (WHERE a.attnum > 0 AND NOT a.attisdropped), '{}') AS columns
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname || '.' || c.relname = ANY($1::text[])
GROUP BY 1, 2
"""

# The relations that have an index REFRESH ... CONCURRENTLY accepts.
_UNIQUE_INDEXED = f"""
SELECT DISTINCT n.nspname || '.' || c.relname
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE {USABLE_UNIQUE_INDEX}
  AND n.nspname || '.' || c.relname = ANY($1::text[])
"""  # noqa: S608 -- a constant fragment, nothing from outside

_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
          "f": "foreign table"}


async def check_rules_against_db(conn: asyncpg.Connection,
                                 plugins: Iterable[LoadedPlugin]) -> list[PluginProblem]:
    """Check plugins' declarations against the database they were applied to.

    Each invalidation rule's table exists (a table, partitioned table, view,
    materialized view or foreign table) and its ``tenant_column``, ``significant_columns``
    and target parameter columns are columns of it; each materialized view exists, its
    sources exist, and one that refreshes concurrently has a usable unique index.

    :param conn: an open ``asyncpg`` connection.
    :param plugins: the plugins to check.
    :returns: every problem found (empty when all is well).
    """
    plugins = list(plugins)
    names = {r.table for p in plugins for r in p.rules}
    names |= {v.name for p in plugins for v in p.views}
    names |= {s for p in plugins for v in p.views for s in v.sources}
    rows = await conn.fetch(_RELATIONS, sorted(names))
    columns: dict[str, list[str]] = {r["name"]: list(r["columns"]) for r in rows}
    kinds = {r["name"]: r["kind"] for r in rows}
    concurrent = [v.name for p in plugins for v in p.views if v.refresh.concurrently]
    indexed = {r[0] for r in await conn.fetch(_UNIQUE_INDEXED, concurrent)}
    problems: list[PluginProblem] = []
    for plugin in plugins:

        def problem(hook: str, message: str, plugin: LoadedPlugin = plugin) -> None:
            problems.append(PluginProblem(plugin.name, hook, message, plugin.distribution,
                                          plugin.version))

        for rule in plugin.rules:
            what = f"invalidation rule {rule.name!r}"
            have = columns.get(rule.table)
            if have is None:
                problem("register_invalidation_rules", f"{what}: table {rule.table!r} does not "
                        "exist (no table, partitioned table, view or materialized view)")
                continue
            wanted = [("tenant_column", rule.tenant_column)]
            wanted += [("significant column", c) for c in rule.significant_columns]
            wanted += [(f"target {t.schema!r} params[{k!r}]", c)
                       for t in rule.targets for k, c in t.params.items()]
            for role, column in wanted:
                if column not in have:
                    problem("register_invalidation_rules",
                            f"{what}: {role} {column!r} is not a column of "
                            f"{_KINDS.get(kinds[rule.table], 'relation')} {rule.table!r} "
                            f"(columns: {', '.join(have) or 'none'})")
        for view in plugin.views:
            what = f"materialized view {view.name!r}"
            if kinds.get(view.name) != "m":
                problem("register_materialized_views",
                        f"{what} does not exist (was the plugin's SQL applied?)")
                continue
            for source in view.sources:
                if source not in columns:
                    problem("register_materialized_views",
                            f"{what}: source {source!r} does not exist")
            if view.refresh.concurrently and view.name not in indexed:
                problem("register_materialized_views",
                        f"{what} refreshes concurrently but has no unique index on plain "
                        "columns without a WHERE clause (REFRESH ... CONCURRENTLY would fail)")
    return problems


def sql_digest(plugin: LoadedPlugin) -> str:
    """A fingerprint of what applying ``plugin``'s SQL does: its scripts (names and text,
    in order) and its views' definitions (:attr:`MaterializedView.definition_id`)."""
    digest = hashlib.sha256()
    for script in plugin.sql:
        digest.update(f"script {script.name}\n{script.sql}\n\0".encode())
    for view in plugin.views:
        digest.update(f"view {view.name} {view.definition_id}\n\0".encode())
    return digest.hexdigest()


_RECORDED_SQL = """
SELECT s.plugin, s.digest, s.distribution, s.version,
       ARRAY(SELECT r FROM unnest(s.relations) AS r WHERE to_regclass(r) IS NULL) AS missing
FROM thorbis.plugin_sql s WHERE s.plugin = ANY ($1::text[])
"""

# The relations of the plugin's schemas, recorded when its SQL was applied: one of them
# gone (a schema dropped and set up again, an index dropped by hand) means the SQL must
# run again, although it did not change.
_SCHEMA_RELATIONS = """
SELECT coalesce(array_agg(quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                          ORDER BY n.nspname, c.relname), '{}')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY ($1::text[]) AND c.relkind IN ('r', 'p', 'i', 'I', 'm', 'v', 'S', 'f')
  AND NOT c.relispartition
"""

_RECORD_SQL = """
INSERT INTO thorbis.plugin_sql (plugin, digest, distribution, version, relations)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (plugin) DO UPDATE SET digest = excluded.digest, relations = excluded.relations,
    distribution = excluded.distribution, version = excluded.version, applied_at = now()
"""


def _schemas(plugin: LoadedPlugin) -> list[str]:
    """The schemas of the tables and views ``plugin`` reads: where its SQL makes them."""
    names = ({r.table for r in plugin.rules} | {v.name for v in plugin.views}
             | {s for v in plugin.views for s in v.sources})
    return sorted({name.split(".", 1)[0] for name in names if "." in name})


@attrs.frozen(slots=True)
class SqlApplied:
    """What :func:`apply_and_check` did with each plugin's SQL (names, in load order).

    :ivar applied: applied (new, changed, or an object of it gone); a plugin without
        SQL or views is in no list.
    :ivar unchanged: held by the database as it is: left alone.
    :ivar newer: the database holds another release's SQL of the plugin, of a later
        version (a process of the earlier release starting during a rolling deploy):
        left alone, so that it does not put its views back over the new release's.
    """

    applied: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    newer: tuple[str, ...] = ()


def _later(recorded: str | None, mine: str | None) -> bool:
    """Whether version ``recorded`` is later than ``mine`` (both PEP 440)."""
    try:
        return recorded is not None and mine is not None and Version(recorded) > Version(mine)
    except InvalidVersion:
        return False


async def _held(conn: Any, plugins: Sequence[LoadedPlugin]) -> SqlApplied:
    """Which of ``plugins``' SQL the database holds already (:class:`SqlApplied`, whose
    ``applied`` is what is left to apply): recorded with the same digest, every
    relation of their schemas recorded then still there, every view with its
    definition's fingerprint; or recorded by a later version of the plugin's
    distribution."""
    recorded = {r["plugin"]: r for r in await conn.fetch(_RECORDED_SQL,
                                                         [p.name for p in plugins])}
    applied, unchanged, newer = [], [], []
    for plugin in plugins:
        found = recorded.get(plugin.name)
        if found is None:
            applied.append(plugin.name)
        elif found["digest"] != sql_digest(plugin):
            if found["distribution"] == plugin.distribution and \
                    _later(found["version"], plugin.version):
                log.warning("plugin %s: the database holds the SQL of %s %s, a later "
                            "release than this %s: left as it is (a process of the earlier "
                            "release during a rolling deploy; `db init --reapply-sql` "
                            "applies this one regardless)", plugin.name,
                            plugin.distribution, found["version"], plugin.version)
                newer.append(plugin.name)
            else:
                applied.append(plugin.name)
        elif found["missing"]:
            log.info("plugin %s: applying its SQL again, although it did not change: "
                     "%s no longer exist(s)", plugin.name, ", ".join(found["missing"]))
            applied.append(plugin.name)
        elif await _views_as_declared(conn, plugin):
            unchanged.append(plugin.name)
        else:
            applied.append(plugin.name)
    return SqlApplied(tuple(applied), tuple(unchanged), tuple(newer))


async def _views_as_declared(conn: Any, plugin: LoadedPlugin) -> bool:
    for view in plugin.views:
        if not _as_declared(await conn.fetchrow(_VIEW_COMMENT, view.name), view):
            return False
    return True


async def _record(conn: Any, plugins: Sequence[LoadedPlugin]) -> None:
    """Record what ``plugins``' SQL, just applied, left in the database."""
    for plugin in plugins:
        relations = await conn.fetchval(_SCHEMA_RELATIONS, _schemas(plugin))
        await conn.execute(_RECORD_SQL, plugin.name, sql_digest(plugin), plugin.distribution,
                           plugin.version, relations)


async def apply_and_check(dsn: str, plugins: Sequence[LoadedPlugin], *,
                          reapply: bool = False) -> SqlApplied:
    """:func:`apply_plugin_sql` for the plugins whose SQL changed, then
    :func:`check_rules_against_db` for all of them, in one transaction.

    The checks need the tables the SQL creates, so they run after it, in the same
    transaction: a refused set of plugins (SQL that fails, a rule naming a column the
    tables lack) leaves no trace in the database, for any plugin of the call.

    A plugin's SQL recorded in ``thorbis.plugin_sql`` with the digest it has now is not
    applied again (see the module): a setup with nothing to change takes no lock on the
    host's tables. The SQL that is applied has its table locks bounded and tried again
    (:mod:`~thorbis_cache.postgres.ddl_locks`), so that a host's transaction open on
    one of them never queues the host's other writes behind it.

    A plugin recorded with another digest by a later version of its distribution is
    left alone too: a process of the earlier release, starting during a rolling
    deploy, would otherwise put its own views back over the new release's.

    :param reapply: apply every plugin's SQL, recorded or not (``db init
        --reapply-sql``: an object of a script was dropped by hand).
    :returns: which plugins' SQL was applied, and which left as it was.
    :raises PluginLoadError: the SQL failed to apply, or the checks found problems;
        nothing was committed.
    :raises TableLockedError: a table stayed locked by other sessions through every
        attempt (they are named); nothing was committed.
    """
    tables = sorted({r.table for p in plugins for r in p.rules}
                    | {s for p in plugins for v in p.views for s in v.sources})
    conn = await connection.connect(dsn, writes="applying the plugins' SQL")
    try:
        return await with_lock_retries(
            conn, lambda: _apply_and_check(conn, plugins, reapply=reapply), tables=tables,
            what="applying the plugins' SQL")
    finally:
        await conn.close()


async def _apply_and_check(conn: asyncpg.Connection, plugins: Sequence[LoadedPlugin], *,
                           reapply: bool) -> SqlApplied:
    async with conn.transaction():
        await conn.execute(_APPLY_LOCK)  # another process's: waited for, unbounded
        await bound_locks(conn)
        having = [p for p in plugins if p.sql or p.views]
        # Nothing is recorded before core migration 012 (or by a bare apply_and_check).
        kept = bool(await conn.fetchval(
            "SELECT to_regclass('thorbis.plugin_sql') IS NOT NULL"))
        held = (await _held(conn, having) if kept and not reapply
                else SqlApplied(applied=tuple(p.name for p in having)))
        changed = [p for p in having if p.name in held.applied]
        await apply_plugin_sql(conn, changed)  # a savepoint per plugin
        problems = await check_rules_against_db(conn, plugins)
        if problems:
            raise PluginLoadError(problems)  # rolls the whole transaction back
        if kept:
            await _record(conn, changed)
    return held
