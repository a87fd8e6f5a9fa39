"""Rules to invalidations: which keys and tags one captured change makes stale.

The same planning serves every capture path (an outbox row written by a trigger, or the
row a logical-decoding change is turned into): a row that can never be planned -- an
unknown operation, malformed images, a parameter that does not convert -- is a
:class:`PoisonRow`, dead-lettered by the worker with the reason.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from thorbis_cache.cache.keys import CacheKey, validate_tenant
from thorbis_cache.errors import ThorbisCacheError
from thorbis_cache.invalidation.capture_loss import tags_reached
from thorbis_cache.plugins.declarations import InvalidationRule, Operation
from thorbis_cache.postgres.outbox import OutboxRow

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache

__all__ = ["Plan", "PoisonRow", "RulePlanner"]


class PoisonRow(ThorbisCacheError, ValueError):
    """An outbox row that can never be turned into invalidations (dead-lettered)."""


def _convert(tp: type, value: object) -> object:
    """Convert a JSON column value to a key parameter type, or raise ValueError."""
    # The usual cases first (what the checks below return for them, sooner).
    if (tp is int or tp is str) and type(value) is tp:
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    elif tp is uuid.UUID:
        if isinstance(value, str):
            return uuid.UUID(value)
    elif tp is dt.date and isinstance(value, str) and len(value) == 10:
        # Only a plain date: a timestamp's day depends on a time zone we do not know.
        return dt.date.fromisoformat(value)
    raise ValueError(f"expected {tp.__name__}")


def _image(row: OutboxRow, which: str) -> dict[str, Any] | None:
    text = getattr(row, which)
    if text is None:
        return None
    if type(text) is dict:
        return text  # decoded by the capture itself (planning only reads it)
    if not isinstance(text, str):
        return dict(text)  # decoded by the capture itself
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise PoisonRow(f"{which}: malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PoisonRow(f"{which}: expected a JSON object, got {type(value).__name__}")
    return value


def _with_key(row: OutboxRow, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """``image`` with the row's primary key columns it lacks, from ``pk`` (the same
    row's: a row whose key changed is one-sided). Found as an operator would: a dead
    letter replayed after its rule was fixed to read a key column carried images of
    what the old rule read, and was planned as if a migration had dropped the column
    (by tags, with an error blaming one)."""
    if image is None:
        return None
    try:
        pk = _image(row, "pk")
    except PoisonRow:
        return image  # the images decide alone, as before
    if not pk or image.keys() >= pk.keys():
        return image
    return {**pk, **image}


def _tenant(value: object) -> str:
    """A change's tenant, checked (a :class:`PoisonRow` when it is not one)."""
    try:
        return validate_tenant(value)
    except ValueError as exc:
        raise PoisonRow(f"tenant: {exc}") from None


def _where(rule: InvalidationRule, schema_name: str) -> str:
    """How a :class:`PoisonRow` names the target it could not build a key of."""
    return f"rule {rule.name!r} target {schema_name!r}"


#: ``Operation`` by value: a dict lookup per change rather than an enum call.
_OPERATIONS: dict[object, Operation] = {o.value: o for o in Operation}


@attrs.frozen(slots=True)
class Plan:
    """What one change makes stale: keys of one tenant and tags of that tenant.

    :ivar unseen: columns the rules read that the change's images lack (the table no
        longer has them, or the capture could not send them): a rule whose significant
        column is unseen fires, and a key that cannot be built without one is replaced
        by its schema's tags (see :class:`RulePlanner`). Empty in the usual case.
    :ivar unreached: schemas a key of which could not be built and that carry no tag:
        their entries stay until their TTL (reported, never silent).
    :ivar every_tenant: the change is a TRUNCATE, or its tenant is unknown (its table no
        longer has the tenant column): ``tags`` are for every tenant (``tenant`` is
        empty). A TRUNCATE that names a tenant (a bulk transaction's, applied by tenant)
        has the same tags for that tenant only.
    :ivar moved_from: an UPDATE that moved its row to another tenant: what it made stale
        for the tenant the row left (this plan is for the tenant it joined).
    """

    tenant: str
    keys: tuple[CacheKey[Any], ...]
    tags: tuple[str, ...]
    unseen: tuple[str, ...] = ()
    unreached: tuple[str, ...] = ()
    every_tenant: bool = False
    moved_from: Plan | None = None


class _Unseen(Exception):
    """A key parameter's column is not in the image: the key cannot be built (a
    signal inside the planner, never raised out of it)."""


class RulePlanner:
    """Plans captured changes with the invalidation rules of a cache's plugins.

    A change whose images lack a column some rule reads (a migration renamed or dropped
    it, and the rules were not updated yet) is still applied, conservatively: a rule
    whose significant column is missing fires, and a key that needs a missing column
    is replaced by its schema's tags for the change's tenant. :attr:`Plan.unseen` and
    :attr:`Plan.unreached` say what was missing, for the worker to report. When the
    tenant column itself is missing, the change's tenant is unknown: the plan is every
    tag the table's rules reach, for every tenant (:attr:`Plan.every_tenant`), as after
    a lost replication slot; and so is a TRUNCATE's, which took every tenant's rows.

    :param cache: the cache whose registry holds the rules' target schemas.
    :param rules: the rules (``app.plugins.all_rules()``).
    """

    def __init__(self, cache: Cache, rules: Iterable[InvalidationRule]) -> None:
        self.cache = cache
        #: rules by table
        self.rules: dict[str, list[InvalidationRule]] = defaultdict(list)
        #: the columns the rules of a table read (what a complete image holds)
        self.columns: dict[str, frozenset[str]] = {}
        #: the tenant column of each table (the same for all its rules: checked where
        #: capture is installed)
        self.tenant_columns: dict[str, str] = {}
        for rule in rules:
            self.rules[rule.table].append(rule)
            self.columns[rule.table] = self.columns.get(rule.table, frozenset()) | {
                *rule.significant_columns,
                *(c for t in rule.targets for c in t.params.values())}
            self.tenant_columns[rule.table] = rule.tenant_column
        self._every_tenant: dict[tuple[str, tuple[str, ...]], Plan] = {}

    def plan(self, row: OutboxRow) -> Plan:
        """The keys and tags a change makes stale.

        :raises PoisonRow: the row can never be applied (the reason names rule, target,
            parameter, column and value).
        """
        try:
            op = _OPERATIONS[row.operation]
        except (KeyError, TypeError):  # TypeError: not even hashable
            if row.operation == "TRUNCATE":
                if row.tenant_id is None:  # every row of every tenant
                    return self._for_every_tenant(row.table_name, ())
                return self._for_tenant(row.table_name, row.tenant_id)
            raise PoisonRow(f"unknown operation {row.operation!r}") from None
        old, new = _image(row, "old"), _image(row, "new")
        needed = self.columns.get(row.table_name)
        if needed and ((old is not None and not old.keys() >= needed)
                       or (new is not None and not new.keys() >= needed)):
            old, new = _with_key(row, old), _with_key(row, new)
        column = self.tenant_columns.get(row.table_name)
        if row.tenant_id is None:
            image = new if new is not None else old
            if column is not None and image is not None and column not in image:
                return self._for_every_tenant(row.table_name, (column,))
        if (op is Operation.UPDATE and old is not None and new is not None
                and column is not None and column in old and column in new
                and old[column] != new[column]):
            # The row left one tenant for another (a table whose key does not hold
            # the tenant): gone from the first, new to the second, each as any rule
            # of either kind would see it.
            left = self._plan(row.table_name, _tenant(old[column]),
                              ((Operation.DELETE, old, None), (Operation.UPDATE, old, None)))
            joined = self._plan(row.table_name, _tenant(new[column]),
                                ((Operation.INSERT, None, new), (Operation.UPDATE, None, new)))
            return attrs.evolve(joined, moved_from=left)
        return self._plan(row.table_name, _tenant(row.tenant_id), ((op, old, new),))

    def _plan(self, table: str, tenant: str,
              changes: tuple[tuple[Operation, dict[str, Any] | None,
                                   dict[str, Any] | None], ...]) -> Plan:
        """The keys and tags of ``tenant`` that ``changes`` (operation, old and new
        images, as one change of ``table`` may be seen) make stale."""
        keys: dict[str, CacheKey[Any]] = {}
        tags: set[str] = set()
        unreached: set[str] = set()
        for (op, old, new), rule in ((c, r) for c in changes
                                     for r in self.rules.get(table, ())):
            if not rule.fires(op, old, new):
                continue
            for target in rule.targets:
                if target.tag is not None:
                    tags.add(target.tag)
                    continue
                images: tuple[dict[str, Any] | None, ...] = (old, new)
                if old is not None and new is not None and all(
                        old.get(c) == new.get(c) for c in target.params.values()):
                    images = (new,)  # the same key either way: built once
                for image in images:
                    try:
                        key = self._key(rule, target.schema or "", target.params, tenant,
                                        image)
                    except _Unseen:
                        # Not knowing which key: every entry of the schema that a tag
                        # reaches goes instead.
                        schema = self.cache.registry.get(target.schema or "")
                        tags.update(schema.tags)
                        if not schema.tags:
                            unreached.add(schema.name)
                        continue
                    if key is not None:
                        keys[key.body] = key
        # What the images lack: both images of a change lack the same columns (the
        # capture writes the columns a table has; an unsent TOASTed value is dropped
        # from both), so one is looked at.
        unseen: tuple[str, ...] = ()
        _, old, new = changes[0]
        image = new if new is not None else old
        needed = self.columns.get(table)
        if needed and image is not None and not image.keys() >= needed:
            unseen = tuple(sorted(needed - image.keys()))
        return Plan(tenant, tuple(keys.values()), tuple(sorted(tags)), unseen,
                    tuple(sorted(unreached)))

    def _for_every_tenant(self, table: str, unseen: tuple[str, ...]) -> Plan:
        """Every tag a change to ``table`` can reach, for every tenant: a TRUNCATE, or
        a change whose tenant column is gone (``unseen``)."""
        plan = self._every_tenant.get((table, unseen))
        if plan is None:
            tags, untagged = tags_reached(self.cache, self.rules[table], [table])
            plan = self._every_tenant[table, unseen] = Plan(
                "", (), tags, unseen, untagged, every_tenant=True)
        return plan

    def _for_tenant(self, table: str, tenant_id: str) -> Plan:
        """Every tag a change to ``table`` can reach, for one tenant: every row of that
        tenant may have changed (a bulk transaction, applied by tenant)."""
        every = self._for_every_tenant(table, ())
        return Plan(_tenant(tenant_id), (), every.tags, (), every.unreached)

    def _key(self, rule: InvalidationRule, schema_name: str, columns: Mapping[str, str],
             tenant: str, image: Mapping[str, Any] | None) -> CacheKey[Any] | None:
        if image is None:
            return None
        try:
            schema = self.cache.registry.get(schema_name)
        except ThorbisCacheError as exc:
            raise PoisonRow(f"{_where(rule, schema_name)}: {exc}") from None
        values: dict[str, object] = {}
        for param in schema.params:
            column = columns.get(param.name)
            if column is None:
                raise PoisonRow(f"{_where(rule, schema_name)}: parameter {param.name!r} is "
                                "mapped to no column")
            if column not in image:
                raise _Unseen(column)
            raw = image[column]
            if raw is None:
                return None  # a NULL parameter names no entry (an unassigned work order)
            try:
                values[param.name] = _convert(param.type, raw)
            except ValueError as exc:
                raise PoisonRow(f"{_where(rule, schema_name)}: parameter {param.name!r} from "
                                f"column {column!r}: "
                                f"cannot convert {raw!r:.80} ({exc})") from None
        try:
            return schema.key(tenant, **values)
        except ValueError as exc:
            raise PoisonRow(f"{_where(rule, schema_name)}: {exc}") from None
