"""What a plugin declares: frozen value types returned by the ``register_*`` hooks.

Key schemas are :class:`thorbis_cache.cache.keys.KeySchema`; everything else a vertical
contributes is described here. Declarations are plain data, validated when a plugin is
loaded (see :mod:`thorbis_cache.plugins.manager`), never executed at import.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.cache.keys import _QUALIFIED_RE, KeySchema

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.warming import WarmBatch

__all__ = [
    "CachePattern",
    "Fetch",
    "InvalidationRule",
    "LoadedPlugin",
    "MaterializedView",
    "Operation",
    "Permission",
    "PluginInfo",
    "RefreshPolicy",
    "RuleTarget",
    "SqlScript",
    "WarmContext",
    "Warmer",
]

_NAMESPACE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")


#: PostgreSQL's reserved key words (its manual's appendix): no schema may be named so
#: without quoting, and a plugin's namespace is its PostgreSQL schema.
PG_RESERVED = frozenset("""
    all analyse analyze and any array as asc asymmetric both case cast check collate
    column constraint create current_catalog current_date current_role current_time
    current_timestamp current_user default deferrable desc distinct do else end except
    false fetch for foreign from grant group having in initially intersect into lateral
    leading limit localtime localtimestamp not null offset on only or order placing
    primary references returning select session_user some symmetric system_user table
    then to trailing true union unique user using variadic when where window with
""".split())  # noqa: SIM905 -- the manual's word list, kept readable

#: Schemas a plugin's namespace may not be: the core's own, and the server's.
TAKEN_SCHEMAS = frozenset({"thorbis", "public", "information_schema"})


def namespace_problem(namespace: str) -> str | None:
    """Why ``namespace`` cannot be a plugin's (it is also the plugin's PostgreSQL
    schema), or None."""
    if not _NAMESPACE_RE.fullmatch(namespace):
        return f"namespace {namespace!r} must be 1-32 of a-z, 0-9, '_', starting with a letter"
    if namespace in TAKEN_SCHEMAS:
        return (f"namespace {namespace!r} is also the plugin's PostgreSQL schema, and "
                f"schema {namespace!r} is "
                + ("thorbis-cache's own" if namespace == "thorbis" else "the server's"))
    if namespace in PG_RESERVED or namespace.startswith("pg_"):
        return (f"namespace {namespace!r} is also the plugin's PostgreSQL schema, and "
                "PostgreSQL reserves that name")
    return None


def _tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _index_lists(value: Any) -> tuple[tuple[str, ...], ...]:
    return tuple(_tuple(i) for i in value)


def _operations(value: Any) -> frozenset[Operation]:
    out = set()
    for item in _tuple(value):
        try:
            out.add(Operation(item.upper()) if isinstance(item, str) else Operation(item))
        except ValueError:
            raise ValueError(f"operation {item!r} is not one of "
                             f"{', '.join(o.value for o in Operation)}") from None
    return frozenset(out)


@attrs.frozen(slots=True)
class PluginInfo:
    """Who a plugin is: returned by ``register_plugin_info``.

    :ivar namespace: the prefix of every name the plugin declares (``hs`` for
        ``hs.customer``); two plugins may not share one.
    :ivar hook_api_version: the version of :mod:`thorbis_cache.plugins.hookspecs` the plugin was
        written against (see ``HOOK_API_VERSION``).
    :ivar title: a human name ("Home services").
    :ivar description: one line for listings.
    """

    namespace: str
    hook_api_version: int
    title: str = ""
    description: str = ""

    def problems(self) -> list[str]:
        """What is wrong with this declaration (empty when valid)."""
        out = []
        namespace: object = self.namespace
        if not isinstance(namespace, str):
            out.append(f"namespace {namespace!r} must be 1-32 of a-z, 0-9, '_'")
        elif (problem := namespace_problem(namespace)) is not None:
            out.append(problem)
        version: object = self.hook_api_version
        if not isinstance(version, int) or isinstance(version, bool):
            out.append(f"hook_api_version must be an int, got {version!r}")
        return out


@attrs.frozen(slots=True)
class CachePattern:
    """A named, reusable read a vertical exposes ("work orders by priority").

    :ivar name: ``<namespace>.<pattern>``.
    :ivar run: ``async (cache, tenant, **kwargs) -> result``.
    :ivar schemas: names of the key schemas it reads or writes.
    :ivar description: one line for listings.
    """

    name: str
    run: Callable[..., Awaitable[Any]]
    schemas: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    description: str = ""


@attrs.frozen(slots=True)
class SqlScript:
    """SQL a plugin needs (schema, tables, indexes, functions).

    Scripts must be idempotent (``CREATE ... IF NOT EXISTS``, ``CREATE OR REPLACE``):
    ``db init`` applies them again over what an earlier release made whenever the
    plugin's SQL changed (``thorbis.plugin_sql``), and the contract kit applies them twice.

    :ivar name: ``<namespace>.<script>``; scripts apply in declaration order.
    :ivar sql: one or more statements.
    """

    name: str
    sql: str


@attrs.frozen(slots=True)
class RefreshPolicy:
    """When a materialized view is refreshed by the scheduler in ``thorbis-cache worker``
    (:mod:`thorbis_cache.mv.scheduler`).

    Two triggers, either or both:

    * **cron**: at each time ``cron`` names, read in ``timezone`` (DST handled: a
      fixed-time job runs once on the day clocks fall back, and at the first valid minute
      on the day they spring forward);
    * **smart**: when the view's data is at least ``max_staleness`` seconds old *and* at
      least ``min_changes`` rows of its ``sources`` (and refreshes of the views it
      ``depends_on``) changed since it was last refreshed, counted from the outbox. With
      only one of the two set, the other is "any age" or "at least one change".

    :ivar cron: a cron expression (5 fields), or None.
    :ivar max_staleness: seconds of age from which a smart refresh may fire.
    :ivar min_changes: changes from which a smart refresh may fire.
    :ivar concurrently: use ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` (needs a unique
        index on the view; checked at registration). A never-populated view still gets a
        first plain refresh.
    :ivar timezone: the IANA zone ``cron`` is read in (``"Europe/Paris"``).
    :ivar statement_timeout: seconds one refresh may run before PostgreSQL cancels it
        (None: the scheduler's default).
    """

    cron: str | None = None
    max_staleness: float | None = None
    min_changes: int | None = None
    concurrently: bool = True
    timezone: str = "UTC"
    statement_timeout: float | None = None

    @property
    def smart(self) -> bool:
        """Whether a smart refresh is configured."""
        return self.max_staleness is not None or self.min_changes is not None


@attrs.frozen(slots=True)
class MaterializedView:
    """A materialized view a plugin owns.

    :ivar name: the qualified view name (``hs.customer_summary``).
    :ivar query: the ``SELECT`` that defines it.
    :ivar unique_index: columns of its unique index (required for concurrent refresh).
    :ivar indexes: other indexed column lists.
    :ivar sources: the tables it reads (their changes count toward a smart refresh).
    :ivar refresh: the refresh policy.
    :ivar tags: cache tags invalidated after each refresh.
    :ivar depends_on: materialized views (of any loaded plugin) this one reads: when
        several are due they are refreshed in dependency order, and each refresh of one
        counts as a change of the views that depend on it.
    """

    name: str
    query: str
    unique_index: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    indexes: tuple[tuple[str, ...], ...] = attrs.field(default=(), converter=_index_lists)
    sources: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    refresh: RefreshPolicy = attrs.field(factory=RefreshPolicy)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    depends_on: tuple[str, ...] = attrs.field(default=(), converter=_tuple)

    @property
    def schema(self) -> str:
        """The PostgreSQL schema of the view."""
        return self.name.split(".", 1)[0]

    @property
    def relation(self) -> str:
        """The view name without its schema."""
        return self.name.split(".", 1)[1]

    def create_sql(self) -> list[str]:
        """The idempotent statements that create the view and its indexes."""
        stmts = [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name} AS\n{self.query.strip()}"]
        if self.unique_index:
            cols = ", ".join(self.unique_index)
            stmts.append(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.relation}_uniq ON {self.name} ({cols})"
            )
        for n, cols_ in enumerate(self.indexes, 1):
            stmts.append(
                f"CREATE INDEX IF NOT EXISTS {self.relation}_idx{n} ON {self.name} "
                f"({', '.join(cols_)})"
            )
        return stmts

    @property
    def definition_id(self) -> str:
        """A fingerprint of the view's definition (its query and indexes), stored as the
        view's comment when it is created: a different fingerprint in the database means
        the plugin changed the view, and applying its SQL recreates it."""
        digest = hashlib.sha256("\n;\n".join(self.create_sql()).encode()).hexdigest()
        return f"thorbis:definition={digest[:32]}"


class Operation(enum.Enum):
    """A row change that can trigger invalidation."""

    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@attrs.frozen(slots=True)
class RuleTarget:
    """What a rule invalidates: the key of ``schema`` whose parameters come from row
    columns (``params={"customer_id": "id"}``), or every key carrying ``tag``.

    Exactly one of ``schema`` and ``tag`` is set.
    """

    schema: str | None = None
    params: Mapping[str, str] = attrs.field(factory=dict)
    tag: str | None = None


#: What :meth:`InvalidationRule.fires` reads for a column missing from an image.
_NOT_IN_OLD, _NOT_IN_NEW = object(), object()


@attrs.frozen(slots=True)
class InvalidationRule:
    """Which cache entries a change to a table makes stale.

    :ivar name: ``<namespace>.<rule>``.
    :ivar table: the qualified table (``hs.customers``).
    :ivar operations: the operations that trigger it.
    :ivar targets: what to invalidate.
    :ivar significant_columns: for UPDATE, fire only when one of these changed, or a
        column its targets' keys are built from (empty: any update fires). INSERT and
        DELETE always fire.
    :ivar tenant_column: the row column that holds the tenant id.
    """

    name: str
    table: str
    operations: frozenset[Operation] = attrs.field(converter=_operations)
    targets: tuple[RuleTarget, ...] = attrs.field(converter=_tuple)
    significant_columns: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    tenant_column: str = "tenant_id"
    #: :meth:`update_columns`, worked out once (read for every change)
    _update_columns: tuple[str, ...] = attrs.field(
        init=False, repr=False, eq=False, hash=False,
        default=attrs.Factory(lambda self: self._columns_updated(), takes_self=True))

    def _columns_updated(self) -> tuple[str, ...]:
        if not self.significant_columns:
            return ()
        # A malformed target (not a RuleTarget) is the plugin checks' to name.
        keyed = [c for t in self.targets for c in getattr(t, "params", {}).values()]
        return tuple(dict.fromkeys([*self.significant_columns, *keyed]))

    def update_columns(self) -> tuple[str, ...]:
        """The columns an UPDATE must change to fire this rule: its significant
        columns, and the columns its targets' keys are built from (empty: every UPDATE
        fires). A row whose key column changed leaves the entry of its old key stale
        and belongs to the entry of its new one (a patient moved to another clinic: both
        clinics' lists), whatever its significant columns say; found as a plugin author
        would, leaving the key column out of them."""
        return self._update_columns

    def fires(self, operation: Operation, old: Mapping[str, Any] | None,
              new: Mapping[str, Any] | None) -> bool:
        """Whether a change fires this rule (the seed's conditional invalidation): for
        an UPDATE, whether one of :meth:`update_columns` changed.

        A significant column missing from an image (the table no longer has it, or the
        capture could not send its value) counts as changed: a change that cannot be
        shown harmless fires.
        """
        if operation not in self.operations:
            return False
        if operation is not Operation.UPDATE or not self._update_columns:
            return True
        old = old or {}
        new = new or {}
        # Two different stand-ins for a missing column: never equal to anything.
        return any(old.get(c, _NOT_IN_OLD) != new.get(c, _NOT_IN_NEW)
                   for c in self._update_columns)

    def columns_read(self) -> frozenset[str]:
        """The columns of its table this rule reads: the tenant column, the significant
        columns and its targets' parameter columns (what the capture must record)."""
        return frozenset({self.tenant_column, *self.significant_columns,
                          *(c for t in self.targets for c in t.params.values())})

    def tags_reached(self, schema_of: Callable[[str], KeySchema[Any]]
                     ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The tags this rule can invalidate (its tag targets' and its target schemas'
        tags, sorted), and its target schemas that carry no tag: what is left when the
        keys it would build cannot be (a lost slot, a rule a worker lacks).

        :param schema_of: the registered schema of a name (``registry.get``).
        """
        tags: set[str] = set()
        untagged: set[str] = set()
        for target in self.targets:
            if target.tag is not None:
                tags.add(target.tag)
            elif target.schema is not None:
                schema = schema_of(target.schema)
                tags.update(schema.tags)
                if not schema.tags:
                    untagged.add(schema.name)
        return tuple(sorted(tags)), tuple(sorted(untagged))


#: ``async (sql, *args) -> rows``: how a plugin's loaders reach the database (the shape of
#: ``asyncpg``'s ``pool.fetch`` and of :attr:`WarmContext.fetch`).
Fetch = Callable[..., Awaitable[Sequence[Mapping[str, Any]]]]


@attrs.frozen(slots=True)
class WarmContext:
    """What a warmer gets: the cache, the tenant, and a database connection factory."""

    cache: Cache
    tenant: str
    fetch: Callable[..., Awaitable[list[Mapping[str, Any]]]]


@attrs.frozen(slots=True)
class Warmer:
    """Fills the cache ahead of demand for one tenant.

    :ivar name: ``<namespace>.<warmer>``.
    :ivar produce: ``(WarmContext) -> async iterator of`` :class:`~thorbis_cache.warming.WarmBatch`:
        each batch names keys of the plugin's own namespace and a loader that reads their
        entries; :func:`thorbis_cache.warming.warm` takes the keys' fill leases *before*
        calling that loader, so a warm never writes a row older than an invalidation.
    :ivar schemas: names of the schemas it fills.
    :ivar description: one line for listings.
    """

    name: str
    produce: Callable[[WarmContext], AsyncIterator[WarmBatch]]
    schemas: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    description: str = ""


@attrs.frozen(slots=True)
class Permission:
    """A permission name a plugin introduces (``hs.work_orders.assign``)."""

    name: str
    description: str = ""


def is_qualified(name: str) -> bool:
    """True for ``schema.relation`` names of lower-case identifiers."""
    return bool(_QUALIFIED_RE.fullmatch(name))


@attrs.frozen
class LoadedPlugin:
    """A plugin that passed every check, with everything it declared.

    :ivar name: the entry-point name, or the name given to
        :meth:`~thorbis_cache.plugins.manager.PluginManager.add`.
    :ivar distribution: the distribution that ships it (``thorbis-home-services``).
    :ivar version: that distribution's version.
    :ivar info: what ``register_plugin_info`` returned.
    """

    name: str
    distribution: str | None
    version: str | None
    info: PluginInfo
    schemas: tuple[KeySchema[Any], ...]
    patterns: tuple[CachePattern, ...]
    sql: tuple[SqlScript, ...]
    views: tuple[MaterializedView, ...]
    rules: tuple[InvalidationRule, ...]
    warmers: tuple[Warmer, ...]
    permissions: tuple[Permission, ...]
