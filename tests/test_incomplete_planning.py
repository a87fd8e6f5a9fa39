"""Planning a change whose images lack columns the rules read
(:class:`~thorbis_cache.invalidation.planning.RulePlanner`): a migration renamed or
dropped them. Property: whatever columns are missing, the plan covers everything the
complete change would have invalidated -- each tag, and each key either itself, through
its schema's tags, or named as unreached -- and says which columns were missing.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from thorbis_home_services.rules import ALL_RULES
from thorbis_home_services.schemas import ALL_SCHEMAS

from thorbis_cache import SchemaRegistry
from thorbis_cache.cache.core import Cache
from thorbis_cache.invalidation.planning import Plan, RulePlanner
from thorbis_cache.postgres.outbox import OutboxRow

TABLES = sorted({r.table for r in ALL_RULES})


def _planner() -> RulePlanner:
    registry = SchemaRegistry()
    for schema in ALL_SCHEMAS:
        registry.register(schema, "home_services")
    # The planner reads the cache's registry only.
    return RulePlanner(cast(Cache, SimpleNamespace(registry=registry)), ALL_RULES)


PLANNER = _planner()

#: A few values per column, so that old and new are often equal and often not.
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from(["scheduled", "dispatched", "completed"]),
    "priority": st.sampled_from(["high", "low"]),
    "account_status": st.sampled_from(["active", "vip"]),
    "payment_status": st.sampled_from(["current", "overdue_30"]),
    "customer_type": st.sampled_from(["residential", "commercial"]),
    "scheduled_day": st.sampled_from(["2024-05-01", "2024-05-02"]),
    "scheduled_at": st.sampled_from(["2024-05-01T15:00:00+00:00", "2024-05-02T09:00:00+00:00"]),
    "completed_at": st.sampled_from([None, "2024-05-01T17:00:00+00:00"]),
    "longitude": st.sampled_from([-97.7, -97.8]),
    "latitude": st.sampled_from([30.2, 30.3]),
    "center_longitude": st.sampled_from([-97.7, -97.8]),
    "center_latitude": st.sampled_from([30.2, 30.3]),
}
_IDS = st.sampled_from([None, 1, 2])


def _column(name: str) -> st.SearchStrategy[Any]:
    if name == "tenant_id":
        return st.just("acme")
    if name in _VALUES:
        return _VALUES[name]
    if name == "id" or name.endswith("_id"):
        return _IDS.filter(lambda v: v is not None) if name == "id" else _IDS
    raise AssertionError(f"no values for column {name!r}")


@st.composite
def changes(draw: st.DrawFn) -> tuple[OutboxRow, frozenset[str]]:
    """A complete change of a ruled table, and the columns a migration took away."""
    table = draw(st.sampled_from(TABLES))
    columns = sorted(PLANNER.columns[table] | {"tenant_id", "id"})
    operation = draw(st.sampled_from(["INSERT", "UPDATE", "DELETE"]))

    def image() -> dict[str, Any]:
        return {c: draw(_column(c)) for c in columns}

    old = image() if operation != "INSERT" else None
    new = image() if operation != "DELETE" else None
    if old is not None and new is not None:
        new["id"] = old["id"]
    missing = draw(st.frozensets(st.sampled_from(columns)))
    row = OutboxRow(id=1, txid="1", created_at=dt.datetime.now(dt.UTC), table_name=table,
                    operation=operation, tenant_id="acme", pk={"id": (new or old or {})["id"]},
                    old=old, new=new, attempts=0, last_error=None, age=0.0)
    return row, missing


def _without(row: OutboxRow, missing: frozenset[str]) -> OutboxRow:
    def cut(image: Any) -> Any:
        return None if image is None else {c: v for c, v in image.items() if c not in missing}

    return OutboxRow(id=row.id, txid=row.txid, created_at=row.created_at,
                     table_name=row.table_name, operation=row.operation,
                     tenant_id=None if "tenant_id" in missing else row.tenant_id,
                     pk=row.pk, old=cut(row.old), new=cut(row.new), attempts=0,
                     last_error=None, age=0.0)


def _covered(complete: Plan, partial: Plan) -> None:
    assert set(complete.tags) <= set(partial.tags), (complete, partial)
    bodies = {k.body for k in partial.keys}
    for key in complete.keys:
        if key.body in bodies:
            continue
        schema = PLANNER.cache.registry.get(key.schema.name)
        if schema.tags:
            assert set(schema.tags) <= set(partial.tags), (key, partial)
        else:
            assert schema.name in partial.unreached, (key, partial)


@settings(max_examples=400, deadline=None)
@given(changes())
def test_a_change_missing_columns_invalidates_at_least_what_it_would_have(
    change: tuple[OutboxRow, frozenset[str]],
) -> None:
    row, missing = change
    complete = PLANNER.plan(row)
    assert complete.unseen == ()
    partial = PLANNER.plan(_without(row, missing))
    _covered(complete, partial)
    needed = PLANNER.columns[row.table_name]
    # The key columns an image lacks are read from the row's pk (a dead letter replayed
    # under a rule that reads more than the one that wrote it): not missing.
    lost = missing - set(row.pk)
    if "tenant_id" in missing:
        assert partial.every_tenant
        assert partial.unseen == ("tenant_id",)
    else:
        assert not partial.every_tenant
        assert partial.tenant == complete.tenant
        assert partial.unseen == tuple(sorted(lost & needed))
    if not lost:
        assert partial == complete


def _as(row: OutboxRow, operation: str, tenant: str, old: Any, new: Any) -> OutboxRow:
    return OutboxRow(id=row.id, txid=row.txid, created_at=row.created_at,
                     table_name=row.table_name, operation=operation, tenant_id=tenant,
                     pk=row.pk, old=old, new=new, attempts=0, last_error=None, age=0.0)


@settings(max_examples=300, deadline=None)
@given(changes().filter(lambda c: c[0].operation == "UPDATE"))
def test_a_row_moved_to_another_tenant_is_planned_for_both(
    change: tuple[OutboxRow, frozenset[str]],
) -> None:
    """An UPDATE that moves its row to another tenant (a table whose key does not hold
    the tenant) makes stale, for the tenant it left, what deleting the row would, and
    for the tenant it joined, what inserting it would; each as an UPDATE of that one
    image would too. Before, the old tenant's entries were left as they were."""
    row, _ = change
    assert row.old is not None
    assert row.new is not None
    moved = _as(row, "UPDATE", "globex", row.old, {**row.new, "tenant_id": "globex"})
    plan = PLANNER.plan(moved)
    left = plan.moved_from
    assert left is not None
    assert (left.tenant, plan.tenant) == ("acme", "globex")
    assert left.moved_from is None
    for part, expected in (
        (left, [_as(row, "DELETE", "acme", row.old, None),
                _as(row, "UPDATE", "acme", row.old, None)]),
        (plan, [_as(moved, "INSERT", "globex", None, moved.new),
                _as(moved, "UPDATE", "globex", None, moved.new)])):
        for alone in expected:
            single = PLANNER.plan(alone)
            assert {k.body for k in single.keys} <= {k.body for k in part.keys}
            assert set(single.tags) <= set(part.tags)
    # Not moved: planned as before, for one tenant.
    assert PLANNER.plan(row).moved_from is None
