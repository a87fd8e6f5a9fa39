"""The rules the database's change capture was set up for: ``thorbis.capture_rules``.

A rolling deploy runs the new release's ``thorbis-cache db init`` (a release job) while
workers of the old release still read the changes, and the docs' deployment starts the
new worker before it stops the old. Found as a user would: a rule the new release added
(one more rule on a table captured already, or every rule of a table newly captured)
was unknown to the worker reading the slot or the outbox. It planned nothing for the
rule's changes, confirmed them, and the entries the new release's processes had cached
stayed stale until their TTL, with no word anywhere.

:func:`record_rules` (``db init``, ``CacheApp.start(apply_sql=True)``), before the
capture is changed, records each rule it sets the capture up for: its name, a digest of
its definition (:func:`rule_digest`: its targets' key templates and tags included), and
what a worker without it needs to apply it conservatively. Each rule replaces the one of
its name; only ``db init --prune`` removes the rules no loaded plugin has any more (a
process of another release, or with fewer plugins, takes nothing away). The worker reads the record
with every batch, after the batch's changes were read: a change made under new rules
was committed after them, so it finds them recorded. A recorded rule the worker lacks
(by name and digest) becomes a stand-in (:meth:`RecordedRule.stand_in`): a rule that
fires as the recorded one would and invalidates, for the change's tenant, every tag
the recorded rule's targets reach. Nothing is confirmed unapplied; the worker says
which rules it lacks, once per record, and counts them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.errors import UnknownSchemaError
from thorbis_cache.plugins.declarations import InvalidationRule, Operation, RuleTarget
from thorbis_cache.postgres.catalog import table_readable

if TYPE_CHECKING:
    import asyncpg

    from thorbis_cache.cache.registry import SchemaRegistry

__all__ = [
    "RecordedRule",
    "lacking",
    "record_readable",
    "record_rules",
    "record_version",
    "recorded_rules",
    "rule_digest",
]

_ORDER = ("INSERT", "UPDATE", "DELETE")


def _schema_shape(registry: SchemaRegistry, name: str) -> dict[str, Any] | None:
    """What of a target schema decides its keys and the tags that reach them."""
    try:
        schema = registry.get(name)
    except UnknownSchemaError:
        return None
    return {"params": [p.name for p in schema.params], "kind": schema.kind.value,
            "tags": sorted(schema.tags)}


def rule_digest(rule: InvalidationRule, registry: SchemaRegistry) -> str:
    """A digest of everything that decides what ``rule`` invalidates: the same in
    every process of one release, different when a release changes the rule or the
    key template or tags of a schema it targets. Orders that mean nothing (of the
    significant columns, the targets, a schema's tags) do not count: a plugin that
    builds them from a set gets them in another order in each process."""
    targets = [{"schema": t.schema, "params": sorted(t.params.items()), "tag": t.tag,
                "keys": None if t.schema is None else _schema_shape(registry, t.schema)}
               for t in rule.targets]
    definition = {
        "name": rule.name, "table": rule.table, "tenant_column": rule.tenant_column,
        "operations": [o for o in _ORDER if Operation(o) in rule.operations],
        "significant_columns": sorted(rule.significant_columns),
        "targets": sorted(targets, key=lambda t: json.dumps(t, sort_keys=True)),
    }
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@attrs.frozen(slots=True)
class RecordedRule:
    """One rule of the record.

    :ivar name: the rule's name.
    :ivar digest: :func:`rule_digest` of its definition.
    :ivar table: the table it watches.
    :ivar tenant_column: the table's tenant column.
    :ivar operations: the operations it fires on.
    :ivar significant_columns: for UPDATE, the columns whose change fires it
        (:meth:`InvalidationRule.update_columns
        <thorbis_cache.plugins.declarations.InvalidationRule.update_columns>`).
    :ivar tags: the tags its targets reach.
    :ivar untagged: its target schemas without a tag.
    :ivar columns: the columns it reads (tenant, significant columns, its targets'
        parameters), which the capture triggers of its table keep writing while it is
        recorded; None when recorded by an earlier release.
    """

    name: str
    digest: str
    table: str
    tenant_column: str
    operations: tuple[str, ...]
    significant_columns: tuple[str, ...]
    tags: tuple[str, ...]
    untagged: tuple[str, ...]
    columns: tuple[str, ...] | None = None

    @classmethod
    def of(cls, rule: InvalidationRule, registry: SchemaRegistry) -> RecordedRule:
        """The record of ``rule``, whose target schemas ``registry`` holds."""
        tags, untagged = rule.tags_reached(registry.get)
        return cls(rule.name, rule_digest(rule, registry), rule.table, rule.tenant_column,
                   tuple(o for o in _ORDER if Operation(o) in rule.operations),
                   tuple(sorted(rule.update_columns())), tags, untagged,
                   tuple(sorted(rule.columns_read())))

    def columns_read(self) -> tuple[str, ...]:
        """The columns the recorded rule reads (those known, when recorded by an
        earlier release: its tenant and significant columns)."""
        if self.columns is not None:
            return self.columns
        return tuple(sorted({self.tenant_column, *self.significant_columns}))

    def stand_in(self) -> InvalidationRule:
        """A rule that fires as the recorded one does and invalidates the tags its
        targets reach (for the change's tenant): what a worker without the rule applies
        in its place. Its name says so."""
        return InvalidationRule(
            f"{self.name} (recorded by db init, not known to this worker)",
            table=self.table, operations=frozenset(Operation(o) for o in self.operations),
            targets=tuple(RuleTarget(tag=tag) for tag in self.tags),
            significant_columns=self.significant_columns, tenant_column=self.tenant_column)


async def record_rules(conn: asyncpg.Connection, rules: Iterable[InvalidationRule],
                       registry: SchemaRegistry, *, exact: bool = False) -> tuple[str, ...]:
    """Record ``rules`` (in one transaction; call it before the capture is changed, so
    that a change made under the new capture finds its rules recorded): each replaces
    the rule of its name; with ``exact`` (``db init --prune``) the others go. Returns
    the names of the rules the record did not hold as they are (added or changed)."""
    records = [RecordedRule.of(rule, registry) for rule in rules]
    async with conn.transaction():
        # One writer at a time: two processes setting up at once would interleave.
        await conn.execute("LOCK TABLE thorbis.capture_rules IN EXCLUSIVE MODE")
        before = {r["name"]: r["digest"] for r in await conn.fetch(
            "SELECT name, digest FROM thorbis.capture_rules")}
        if exact:
            await conn.execute("DELETE FROM thorbis.capture_rules WHERE NOT name = ANY ($1)",
                               [r.name for r in records])
        await conn.executemany(
            "INSERT INTO thorbis.capture_rules (name, digest, table_name, tenant_column, "
            "operations, significant_columns, tags, untagged, columns) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO UPDATE SET "
            "digest = excluded.digest, table_name = excluded.table_name, "
            "tenant_column = excluded.tenant_column, operations = excluded.operations, "
            "significant_columns = excluded.significant_columns, tags = excluded.tags, "
            "untagged = excluded.untagged, columns = excluded.columns, recorded_at = now() "
            "WHERE thorbis.capture_rules.digest IS DISTINCT FROM excluded.digest "
            "OR thorbis.capture_rules.columns IS NULL "
            # An earlier release recorded the significant columns alone: the key
            # columns an UPDATE must change to fire the rule are recorded too now.
            "OR thorbis.capture_rules.significant_columns "
            "IS DISTINCT FROM excluded.significant_columns",
            [(r.name, r.digest, r.table, r.tenant_column, list(r.operations),
              list(r.significant_columns), list(r.tags), list(r.untagged),
              list(r.columns_read()))
             for r in records])
    return tuple(sorted(r.name for r in records if before.get(r.name) != r.digest))


#: One short value that changes whenever the record does (a worker's per-batch look).
_VERSION = """
SELECT md5(coalesce(string_agg(name || '=' || digest, ',' ORDER BY name), ''))
FROM thorbis.capture_rules
"""


async def record_readable(conn: asyncpg.Connection) -> bool | None:
    """Whether this role may read the record: None when the database keeps none (one
    set up by an earlier release has none until ``db migrate``)."""
    return await table_readable(conn, "thorbis", "capture_rules")


async def record_version(conn: asyncpg.Connection) -> str:
    """What the record holds, in 32 characters (:func:`record_readable` first)."""
    return str(await conn.fetchval(_VERSION))


async def recorded_rules(conn: asyncpg.Connection) -> list[RecordedRule]:
    """Every rule of the record, by name."""
    rows = await conn.fetch(
        "SELECT name, digest, table_name, tenant_column, operations, significant_columns, "
        "tags, untagged, to_jsonb(c) -> 'columns' AS columns "
        "FROM thorbis.capture_rules c ORDER BY name")
    return [RecordedRule(r["name"], r["digest"], r["table_name"], r["tenant_column"],
                         tuple(r["operations"]), tuple(r["significant_columns"]),
                         tuple(r["tags"]), tuple(r["untagged"]),
                         None if r["columns"] in (None, "null") else
                         tuple(json.loads(r["columns"]))) for r in rows]


def lacking(recorded: Sequence[RecordedRule], rules: Iterable[InvalidationRule],
            registry: SchemaRegistry) -> list[RecordedRule]:
    """The recorded rules that ``rules`` (a worker's) lack, by name and digest."""
    have = {rule_digest(rule, registry) for rule in rules}
    return [r for r in recorded if r.digest not in have]
