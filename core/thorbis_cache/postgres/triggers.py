"""Generate and install the outbox capture triggers from plugins' invalidation rules.

Per ruled table, generated functions and statement-level ``AFTER INSERT``/``UPDATE``/
``DELETE`` triggers with transition tables (see :func:`trigger_sql`): one ``INSERT ...
SELECT`` per statement writes ONE ``thorbis.outbox`` row per row change, in the
transaction of the change, carrying the tenant and the old/new values of the columns the
rules need -- significant columns, target parameter columns and the tenant column --
and of the primary key (read from the catalog), nothing else (no personal data travels
that no rule reads). The values are written as text arrays laid out by a registered
shape (:mod:`~thorbis_cache.postgres.outbox_images`); the worker rebuilds the JSON.

No NOTIFY: a transaction that queued one takes a database-wide lock at commit, so every
notifying writer would commit one at a time (0.47x the tx/s of 8 writers without
capture, measured). The worker polls the outbox with a short adaptive pause instead
(:meth:`thorbis_cache.invalidation.worker.OutboxWorker.run`); :data:`CHANNEL` is still LISTENed on,
so a NOTIFY sent by hand or by a tool wakes it at once.

Cost control: the trigger fires only for the operations some rule handles, and an UPDATE
is skipped in the database when every rule handling UPDATE has significant columns and
none of them changed (so the seed's conditional customer-list rule costs nothing on a
phone-number edit). A rule without significant columns fires on every UPDATE, so a table
with such a rule records every UPDATE.

**Sources of materialized views.** A view's smart refresh counts the changes of its
``sources`` from the outbox. A source table that no rule names (since entries mirroring
a view are invalidated by its refresh, not by base-table rules, that is the usual case)
gets a count-only trigger: every INSERT, UPDATE and DELETE, the tenant and primary key,
no other column. Its outbox rows plan no invalidation; the worker only counts them.

Installing is idempotent (``CREATE OR REPLACE FUNCTION``, ``DROP TRIGGER IF EXISTS`` +
``CREATE TRIGGER`` in one transaction) and drops the row-level ``thorbis_capture``
trigger of earlier releases. A table whose capture triggers are in place, as the rules
need them, keeps them, and a function whose body is the same is not replaced (which
would take no lock on the table, but every session would compile it again): a setup
with nothing to change never waits for the host's writers, and rewrites no function. It
records what each table's capture reads in ``thorbis.captured_tables``, which the event trigger of
:mod:`~thorbis_cache.postgres.capture_ddl` checks every ``ALTER TABLE`` against: a
migration that takes away a column the rules read gets a capture that reads rows by
name in place of these triggers, so that the host's writes never fail on it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import asyncpg
import attrs

from thorbis_cache.errors import ConfigurationError
from thorbis_cache.plugins.declarations import InvalidationRule, MaterializedView, Operation
from thorbis_cache.postgres.capture_ddl import (
    EVENT_BITS,
    TRIGGERS_LOCK,
    TRUNCATE_BITS,
    capture_partitions,
    record_captured,
)
from thorbis_cache.postgres.catalog import PK_COLUMNS, quote_ident
from thorbis_cache.postgres.ddl_locks import bound_locks
from thorbis_cache.postgres.outbox_images import Shape, register_shape, value_sql
from thorbis_cache.postgres.rules_record import RecordedRule

__all__ = [
    "CHANNEL", "KEY_TRIGGER", "TRIGGERS", "TRUNCATE_TRIGGER", "TablePlan", "capture_triggers",
    "drop_sql", "function_sql", "install_triggers", "plan_tables", "remove_triggers",
    "table_trigger_sql", "trigger_sql",
]

#: The LISTEN/NOTIFY channel workers listen on (the triggers send nothing on it).
CHANNEL = "thorbis_outbox"

_COLUMNS = """
SELECT attname::text, atttypid::regtype::text FROM pg_catalog.pg_attribute
WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
"""

_LOCK = TRIGGERS_LOCK




def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@attrs.frozen(slots=True)
class TablePlan:
    """What the capture trigger of one table records.

    :ivar table: ``schema.table``.
    :ivar tenant_column: the column holding the tenant (the same for every rule).
    :ivar columns: the columns written to ``old``/``new``, sorted.
    :ivar operations: the operations captured.
    :ivar update_filter: the columns whose change makes an UPDATE worth recording (the
        rules' significant columns and the tenant); empty means every UPDATE is recorded
        (some rule has no significant columns).
    """

    table: str
    tenant_column: str
    columns: tuple[str, ...]
    operations: frozenset[Operation]
    update_filter: tuple[str, ...]

    @property
    def function_name(self) -> str:
        """The trigger function, ``thorbis.capture__<schema>__<table>``."""
        schema, relation = self.table.split(".", 1)
        return f"thorbis.{quote_ident(f'capture__{schema}__{relation}')}"

    @property
    def update_function_name(self) -> str:
        """The statement-level UPDATE function, ``thorbis.capture_update__<schema>__<table>``."""
        schema, relation = self.table.split(".", 1)
        return f"thorbis.{quote_ident(f'capture_update__{schema}__{relation}')}"

    @property
    def key_function_name(self) -> str:
        """The row-level function of earlier releases for key-changing UPDATEs,
        ``thorbis.capture_key__...`` (dropped on install)."""
        schema, relation = self.table.split(".", 1)
        return f"thorbis.{quote_ident(f'capture_key__{schema}__{relation}')}"


#: The tenant column a count-only trigger (a view source no rule names) records.
SOURCE_TENANT_COLUMN = "tenant_id"


def plan_tables(
    rules: Iterable[InvalidationRule], views: Iterable[MaterializedView] = (),
    recorded: Iterable[RecordedRule] = (),
) -> list[TablePlan]:
    """Group rules by table and work out what each trigger records; add a count-only
    plan for each source of ``views`` that no rule names.

    :param recorded: rules of the record (``thorbis.capture_rules``) that ``rules``
        do not have: the processes of another release may still run them, so the
        trigger of a table ``rules`` name records what they need too (a setup only
        adds; ``db init --prune`` forgets them). One whose tenant column differs from
        the table's rules' is left out.
    :raises ConfigurationError: rules of one table disagree on the tenant column.
    """
    others: dict[str, list[RecordedRule]] = defaultdict(list)
    for other in recorded:
        others[other.table].append(other)
    by_table: dict[str, list[InvalidationRule]] = defaultdict(list)
    for rule in rules:
        by_table[rule.table].append(rule)
    plans = [
        TablePlan(table, SOURCE_TENANT_COLUMN, (SOURCE_TENANT_COLUMN,),
                  frozenset(Operation), ())
        for table in sorted({s for v in views for s in v.sources} - set(by_table))
    ]
    for table in sorted(by_table):
        table_rules = by_table[table]
        tenants = {r.tenant_column for r in table_rules}
        if len(tenants) != 1:
            names = ", ".join(f"{r.name!r} ({r.tenant_column})" for r in table_rules)
            raise ConfigurationError(
                f"rules of table {table!r} name different tenant columns: {names}"
            )
        extra = [o for o in others[table] if o.tenant_column in tenants]
        columns = set(tenants).union(*(r.columns_read() for r in table_rules),
                                     *(o.columns_read() for o in extra))
        operations = frozenset({op for r in table_rules for op in r.operations}
                               | {Operation(op) for o in extra for op in o.operations})
        update_rules = [r for r in table_rules if Operation.UPDATE in r.operations]
        significant = [r.update_columns() for r in update_rules] + [
            o.significant_columns for o in extra if Operation.UPDATE.value in o.operations]
        if all(significant):
            # And the tenant: a row moved to another tenant left the first one's entries
            # stale whatever else it changed (a key without the tenant keeps the rows
            # paired).
            update_filter = tuple(sorted({c for s in significant for c in s} | tenants))
        else:
            update_filter = ()
        plans.append(TablePlan(table, tenants.pop(), tuple(sorted(columns)), operations,
                               update_filter))
    return sorted(plans, key=lambda plan: plan.table)


#: The capture triggers of a table: one per operation (a trigger with transition tables
#: handles a single event).
TRIGGERS = {
    Operation.INSERT: "thorbis_capture_insert",
    Operation.UPDATE: "thorbis_capture_update",
    Operation.DELETE: "thorbis_capture_delete",
}
#: The row-level trigger of earlier releases for UPDATEs that changed the key: its
#: ``WHEN`` read the key columns, so PostgreSQL refused a migration that changed their
#: type ("cannot alter type of a column used in a trigger definition"). The UPDATE
#: function's FULL JOIN records such rows now; dropped on install.
KEY_TRIGGER = "thorbis_capture_key"
#: The statement-level ``AFTER TRUNCATE`` trigger: one outbox row naming the table
#: (``thorbis.capture_truncate``, ``sql/core/008_capture_truncate.sql``).
TRUNCATE_TRIGGER = "thorbis_capture_truncate"
#: Triggers of earlier releases, dropped on install (0.x: one row-level trigger).
_OLD_TRIGGERS = ("thorbis_capture",)


def drop_sql(table: str) -> list[str]:
    """The statements that drop every capture trigger of ``table`` (``schema.table``)."""
    schema, relation = table.split(".", 1)
    target = f"{quote_ident(schema)}.{quote_ident(relation)}"
    return [f"DROP TRIGGER IF EXISTS {quote_ident(name)} ON {target}"
            for name in (*TRIGGERS.values(), KEY_TRIGGER, TRUNCATE_TRIGGER, *_OLD_TRIGGERS)]


def function_sql(plan: TablePlan, shape: Shape, types: Mapping[str, str],
                 search_path: str = "pg_catalog, pg_temp") -> list[str]:
    """The statements that (re)create the capture functions of ``plan``'s triggers.

    Statement-level triggers with transition tables: one ``INSERT ... SELECT`` into the
    outbox per statement, whatever the number of rows (a PL/pgSQL call and an INSERT per
    row cost a 10,000-row UPDATE more than the UPDATE itself). An UPDATE pairs old and
    new rows by primary key with a ``FULL JOIN``: a row whose key changed has no partner
    and is recorded one-sided (its old row, and its new row), which the worker plans
    conservatively (a key swap may also pair two different rows: that row names extra
    keys, never fewer). No row-level trigger, so no trigger definition reads a column:
    a migration may change the type of, or drop, any of them (the event trigger of
    :mod:`~thorbis_cache.postgres.capture_ddl` then replaces these triggers). Measured
    against the join plus the row-level key trigger of earlier releases: the same cost
    (a temporary ``fulljoin`` modifier of ``bench/capture_variants.py``, same runs, 5
    repetitions: 0.69x against 0.68x the tx/s of no capture at 8 connections, 0.78x
    against 0.80x at 1, a 10,000-row UPDATE 1.19x against 1.17x).

    The images are written as text arrays laid out by ``shape`` (the rules' columns and
    the key; :mod:`~thorbis_cache.postgres.outbox_images`: a text cast per value instead
    of ``jsonb_build_object``); the worker rebuilds the key and the JSON objects when it
    claims them.

    :param plan: from :func:`plan_tables`.
    :param shape: the registered layout of the table's image arrays
        (:func:`~thorbis_cache.postgres.outbox_images.register_shape`).
    :param types: column -> type name (``atttypid::regtype::text``) of at least the key
        and image columns.
    :returns: ``CREATE OR REPLACE FUNCTION`` statements: they take no lock on the
        table.
    """
    tenant = quote_ident(plan.tenant_column)
    name = _literal(plan.table)
    pk_columns = shape.key_columns

    def array(record: str) -> str:
        values = ", ".join(value_sql(record, quote_ident(c), types[c]) for c in shape.columns)
        return f"ARRAY[{values}]::text[]"

    def select(op: str, key: str, old: str | None, new: str | None) -> str:
        columns = "table_name, operation, tenant_id, shape" + (
            ", old_values" if old else "") + (", new_values" if new else "")
        images = ", ".join(array(r) for r in (old, new) if r)
        return (f"INSERT INTO thorbis.outbox ({columns})\n"
                f"        SELECT {name}, {_literal(op)}, {key}.{tenant}::text, {shape.id}, "
                f"{images}")

    def changed(old: str, new: str) -> str:
        return " OR ".join(f"{old}.{quote_ident(c)} IS DISTINCT FROM {new}.{quote_ident(c)}"
                           for c in plan.update_filter)

    # Old and new rows paired by primary key; a row whose key changed has no partner
    # and comes out one-sided (its first key column, NOT NULL, is NULL on the other).
    same_key = " AND ".join(f"o.{quote_ident(c)} = n.{quote_ident(c)}" for c in pk_columns)
    first = quote_ident(pk_columns[0])
    update = (f"INSERT INTO thorbis.outbox (table_name, operation, tenant_id, shape, "  # noqa: S608 -- identifiers quoted by quote_ident, literals by _literal
              f"old_values, new_values)\n"
              f"        SELECT {name}, 'UPDATE', coalesce(n.{tenant}, o.{tenant})::text, "
              f"{shape.id}, CASE WHEN o.{first} IS NOT NULL THEN {array('o')} END, "
              f"CASE WHEN n.{first} IS NOT NULL THEN {array('n')} END\n"
              f"        FROM thorbis_old o FULL JOIN thorbis_new n ON {same_key}")
    if plan.update_filter:
        update += (f"\n        WHERE o.{first} IS NULL OR n.{first} IS NULL "
                   f"OR {changed('o', 'n')}")
    header = (f"-- Generated by thorbis_cache.postgres.triggers from the invalidation rules of "
              f"{plan.table};\n-- reinstalled by `thorbis-cache db init`. Records the columns "
              "the rules read, no others.\n-- No NOTIFY: a transaction that queued one takes a "
              "database-wide lock at commit,\n-- which serialises every notifying writer; the "
              "worker polls the outbox instead.")
    # Run as the owner (db init's role, which may write thorbis.outbox), not as the
    # writer: a host's application role may have no rights on the thorbis schema, and
    # every write of a watched table failed with "permission denied for schema thorbis".
    # A fixed search_path (db init's own, pg_temp last) so that no writer can put its
    # own objects in the way; the columns' operators (an extension's, as citext's in
    # public) resolve as they did when the function was generated.
    definer = f"SECURITY DEFINER SET search_path = {search_path}"
    function = _generated(plan.function_name, definer, f"""{header}
BEGIN
    IF TG_OP = 'INSERT' THEN
        {select('INSERT', 'n', None, 'n')} FROM thorbis_new n;
    ELSE
        {select('DELETE', 'o', 'o', None)} FROM thorbis_old o;
    END IF;
    RETURN NULL;
END
""")
    # PL/pgSQL plans the INSERT once per session and keeps the plan: planned for a
    # single-row UPDATE, the join is a nested loop, and a later 10,000-row UPDATE in the
    # same session ran it over 10,000 x 10,000 pairs (6.7 s instead of 0.14 s, measured).
    # With nested loops off the join is hashed (merge-joined at worst) whatever the size
    # the plan was made for; the setting is restored when the function returns.
    update_function = _generated(plan.update_function_name,
                                 f"SET enable_nestloop = off {definer}", f"""{header}
-- Statement-level UPDATE: old and new rows paired by primary key.
BEGIN
    {update};
    RETURN NULL;
END
""")
    return [function, update_function]


@attrs.frozen(slots=True)
class _Trigger:
    """One capture trigger of a table, as ``pg_trigger`` holds it: an ``AFTER ... FOR
    EACH STATEMENT`` trigger, enabled ALWAYS (:func:`_always`)."""

    name: str
    event: str
    #: ``pg_trigger.tgtype`` (PostgreSQL's TRIGGER_TYPE_* bits: a statement-level AFTER
    #: trigger sets its event's bit only).
    bits: int
    old: str | None
    new: str | None
    function: str
    args: tuple[str, ...] = ()

    def create_sql(self, table: str) -> str:
        referencing = " ".join(f"{kind} TABLE AS {alias}" for kind, alias
                               in (("OLD", self.old), ("NEW", self.new)) if alias)
        return (f"CREATE TRIGGER {quote_ident(self.name)} AFTER {self.event} ON {table} "
                + (f"REFERENCING {referencing} " if referencing else "")
                + f"FOR EACH STATEMENT EXECUTE FUNCTION {self.function}("
                + ", ".join(_literal(a) for a in self.args) + ")")


_TRANSITION = {Operation.INSERT: (None, "thorbis_new"),
               Operation.UPDATE: ("thorbis_old", "thorbis_new"),
               Operation.DELETE: ("thorbis_old", None)}


def _triggers(plan: TablePlan) -> list[_Trigger]:
    """The capture triggers ``plan`` needs: one per operation some rule handles, and a
    TRUNCATE trigger (one outbox row naming the table, which the worker plans for
    every tenant: a TRUNCATE removes every row without a row trigger)."""
    triggers = [
        _Trigger(TRIGGERS[op], op.value, EVENT_BITS[op], *_TRANSITION[op],
                 plan.update_function_name if op is Operation.UPDATE else plan.function_name)
        for op in Operation if op in plan.operations]
    triggers.append(_Trigger(TRUNCATE_TRIGGER, "TRUNCATE", TRUNCATE_BITS, None, None,
                             "thorbis.capture_truncate", (plan.table,)))
    return triggers


def table_trigger_sql(plan: TablePlan) -> list[str]:
    """The statements that (re)create the capture triggers of ``plan`` on its table,
    after dropping every capture trigger there (those of earlier releases too): table
    locks that conflict with every writer of the table."""
    schema, relation = plan.table.split(".", 1)
    table = f"{quote_ident(schema)}.{quote_ident(relation)}"
    statements = drop_sql(plan.table)
    for trigger in _triggers(plan):
        statements.append(trigger.create_sql(table))
        statements.append(_always(table, trigger.name))
    return statements


def trigger_sql(plan: TablePlan, shape: Shape, types: Mapping[str, str],
                search_path: str = "pg_catalog, pg_temp") -> list[str]:
    """The statements that (re)create the capture functions and triggers of ``plan``:
    :func:`function_sql`, :func:`table_trigger_sql`, then the drop of an earlier
    release's key function."""
    return [*function_sql(plan, shape, types, search_path), *table_trigger_sql(plan),
            f"DROP FUNCTION IF EXISTS {plan.key_function_name}()"]


# The capture triggers on a table: those of this release's names and those of
# earlier releases, and any other trigger running a function of the thorbis schema.
_INSTALLED = """
SELECT t.tgname::text AS name, t.tgtype::int AS bits, t.tgenabled::text AS enabled,
       t.tgoldtable::text AS old, t.tgnewtable::text AS new, t.tgfoid AS function,
       t.tgargs AS args, t.tgqual IS NULL AND t.tgattr::text = '' AS plain
FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = to_regclass($1) AND NOT t.tgisinternal
  AND (t.tgname = ANY ($2::text[])
       OR t.tgfoid IN (SELECT p.oid FROM pg_catalog.pg_proc p
                       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = 'thorbis'))
"""


def _generated(name: str, clauses: str, body: str) -> str:
    """A capture function's ``CREATE OR REPLACE`` statement. Its body starts with its
    clauses (settings, security), so that the body alone tells whether the function
    in the database is this one (:func:`_function_in_place`)."""
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger\n"
            f"LANGUAGE plpgsql {clauses} AS $capture$\n-- {clauses}\n{body}$capture$")


# The name and the body of a function made by _generated.
_GENERATED = re.compile(r"CREATE OR REPLACE FUNCTION (?P<name>\S+)\(\).*?"
                        r"\$capture\$(?P<body>.*)\$capture\$", re.DOTALL)


async def _function_in_place(conn: asyncpg.Connection, statement: str) -> bool:
    """Whether the function ``statement`` (of :func:`function_sql`) makes is there with
    the same body, which starts with its clauses: then it is not replaced (every
    session that runs a replaced function compiles it again, and the catalog row is
    written for nothing)."""
    found = _GENERATED.match(statement)
    if found is None:
        return False
    return bool(await conn.fetchval(
        "SELECT prosrc = $2 FROM pg_catalog.pg_proc WHERE oid = to_regprocedure($1)",
        f"{found['name']}()", found["body"]))


async def _triggers_in_place(conn: asyncpg.Connection, plan: TablePlan) -> bool:
    """Whether ``plan``'s table has exactly the capture triggers it needs, as
    :func:`table_trigger_sql` makes them (no other, none disabled): then a setup
    leaves them alone, and takes no lock on the table (the functions they run are
    replaced without one)."""
    wanted = {t.name: t for t in _triggers(plan)}
    names = [*wanted, KEY_TRIGGER, *_OLD_TRIGGERS]
    installed = await conn.fetch(_INSTALLED, plan.table, names)
    if {r["name"] for r in installed} != set(wanted):
        return False
    functions = dict(await conn.fetch(
        "SELECT f, to_regprocedure(f || '()')::oid FROM unnest($1::text[]) AS f",
        sorted({t.function for t in wanted.values()})))
    for row in installed:
        want = wanted[row["name"]]
        args = tuple(a.decode() for a in bytes(row["args"]).split(b"\0")[:-1])
        if (row["bits"], row["enabled"], row["old"], row["new"], row["function"], args,
                row["plain"]) != (want.bits, "A", want.old, want.new,
                                  functions[want.function], want.args, True):
            return False
    return True


def _always(table: str, trigger: str) -> str:
    """Fire in a replica session too: a trigger enabled the ordinary way (ORIGIN) does
    not run under ``session_replication_role = replica``, which bulk fixes, ETL tools
    and ``pg_restore --disable-triggers`` set, and their writes went uncaptured."""
    return f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {quote_ident(trigger)}"


async def install_triggers(conn: asyncpg.Connection, rules: Iterable[InvalidationRule],
                           views: Iterable[MaterializedView] = (),
                           recorded: Iterable[RecordedRule] = ()) -> list[TablePlan]:
    """Install (or refresh) the capture trigger of every table the rules name, and a
    count-only trigger on every source of ``views`` no rule names.

    All tables in one transaction: either every trigger matches the rules, or none changed.
    The core schema (:func:`thorbis_cache.postgres.migrations.migrate`) must be applied.

    :param conn: an open connection, not inside a transaction.
    :param rules: the invalidation rules (``PluginManager.all_rules()``).
    :param views: the materialized views whose smart refresh counts their sources'
        changes (``PluginManager.all_views()``).
    :param recorded: rules of the record that ``rules`` lack, whose needs the triggers
        keep recording (:func:`plan_tables`); a column of theirs the table no longer has
        is left out.
    :returns: the installed plans.
    :raises ConfigurationError: a table is missing or has no primary key, or the rules of
        a table disagree on the tenant column.
    :raises asyncpg.LockNotAvailableError: a table lock was not granted within
        :data:`~thorbis_cache.postgres.ddl_locks.LOCK_TIMEOUT` (nothing changed; see
        :func:`~thorbis_cache.postgres.ddl_locks.with_lock_retries`).
    """
    rules = list(rules)
    views = list(views)
    plans = plan_tables(rules, views, recorded)
    own = {plan.table: plan for plan in plan_tables(rules, views)}
    installed = []
    path = str(await conn.fetchval("SHOW search_path")).strip()
    search_path = f"{path}, pg_temp" if path and path != '""' else "pg_catalog, pg_temp"
    async with conn.transaction():
        await conn.execute(_LOCK)  # another db init: waited for, it holds no host statement
        await bound_locks(conn)
        for plan in plans:
            if await conn.fetchval("SELECT to_regclass($1)", plan.table) is None:
                raise ConfigurationError(f"cannot install capture trigger: table "
                                         f"{plan.table!r} does not exist")
            have = {r[0]: r[1] for r in await conn.fetch(_COLUMNS, plan.table)}
            missing = [c for c in own[plan.table].columns if c not in have]
            if missing:
                # PL/pgSQL binds columns at run time: a trigger naming a missing column
                # would break every write of the host application, so refuse here.
                raise ConfigurationError(
                    f"cannot install capture trigger on {plan.table!r}: the rules name "
                    f"columns it does not have: {', '.join(missing)}"
                )
            # A removed rule's column that a migration dropped since: not recorded.
            plan = attrs.evolve(
                plan, columns=tuple(c for c in plan.columns if c in have),
                update_filter=tuple(c for c in plan.update_filter if c in have))
            installed.append(plan)
            pk = [r[0] for r in await conn.fetch(PK_COLUMNS, plan.table)]
            if not pk:
                raise ConfigurationError(
                    f"cannot install capture trigger on {plan.table!r}: it has no primary key "
                    "(the outbox identifies changed rows by it)"
                )
            shape = await register_shape(conn, plan.table, pk, plan.columns, have)
            statements = [s for s in function_sql(plan, shape, have, search_path)
                           if not await _function_in_place(conn, s)]
            if not await _triggers_in_place(conn, plan):
                statements += table_trigger_sql(plan)
            statements.append(f"DROP FUNCTION IF EXISTS {plan.key_function_name}()")
            for statement in statements:
                await conn.execute(statement)
            # What a host's migration is checked against (capture_ddl).
            await record_captured(conn, plan.table, tenant_column=plan.tenant_column,
                                  columns=plan.columns, key_columns=pk,
                                  operations={o.value for o in plan.operations},
                                  track_types=True, update_filter=plan.update_filter)
        # A statement naming a partition fires the partition's triggers only.
        await capture_partitions(conn, [plan.table for plan in plans])
    return installed


_CAPTURE_TRIGGERS = """
SELECT quote_ident(t.tgname), t.tgrelid::regclass::text
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'thorbis' AND NOT t.tgisinternal
  AND p.proname <> 'capture_truncate_message'
ORDER BY 2, 1
"""


async def capture_triggers(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Every capture trigger installed (every trigger running a function of the
    ``thorbis`` schema, but the partitions' TRUNCATE triggers of logical capture, which
    write no outbox row): ``(quoted trigger name, table)`` pairs, by table."""
    return [(name, table) for name, table in await conn.fetch(_CAPTURE_TRIGGERS)]


async def remove_triggers(conn: asyncpg.Connection) -> list[str]:
    """Drop every capture trigger (every trigger running a function of the ``thorbis``
    schema), in one transaction: for a database switched to logical capture, where a
    trigger would write outbox rows that no worker reads.

    :returns: ``"<trigger> ON <table>"`` of each one dropped.
    """
    dropped = []
    async with conn.transaction():
        await conn.execute(_LOCK)
        await bound_locks(conn)
        for name, table in await capture_triggers(conn):
            await conn.execute(f"DROP TRIGGER {name} ON {table}")
            dropped.append(f"{name} ON {table}")
    return dropped
