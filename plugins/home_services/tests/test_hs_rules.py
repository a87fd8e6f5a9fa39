"""The invalidation rules: the seed's conditional rule, targets that name real columns
and build real keys from real rows, INSERT rules for every entity that caches absence,
and no rule reaching an entry that mirrors a view."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hs_testing import LoadedDb
from thorbis_cache.plugins.declarations import InvalidationRule, Operation

from thorbis_home_services.rules import (
    ALL_RULES,
    CUSTOMER_ENTITY,
    CUSTOMER_LISTS_ON_MEMBERSHIP,
    CUSTOMER_LISTS_ON_SIGNIFICANT_CHANGE,
    CUSTOMER_SIGNIFICANT_COLUMNS,
    WORK_ORDER_SCHEDULE,
)
from thorbis_home_services.schemas import ALL_SCHEMAS, TAG_CUSTOMER_LISTS, TAGS
from thorbis_home_services.views import ALL_VIEWS

SCHEMAS = {s.name: s for s in ALL_SCHEMAS}
BASE = {"id": 1, "tenant_id": "acme", "account_status": "active", "payment_status": "current",
        "customer_type": "residential", "phone": "1", "email": "a@x"}
CHANGES = {"account_status": "vip", "payment_status": "overdue_30",
           "customer_type": "commercial", "phone": "2", "email": "b@x"}


@pytest.mark.parametrize(
    "changed",
    [set(c) for n in range(len(CHANGES) + 1) for c in itertools.combinations(CHANGES, n)],
    ids=lambda c: "+".join(sorted(c)) or "nothing",
)
def test_conditional_customer_rule_truth_table(changed: set[str]) -> None:
    new = {**BASE, **{c: CHANGES[c] for c in changed}}
    significant = bool(changed & set(CUSTOMER_SIGNIFICANT_COLUMNS))
    rule = CUSTOMER_LISTS_ON_SIGNIFICANT_CHANGE
    assert rule.fires(Operation.UPDATE, BASE, new) is significant
    # The lists are its target (the seed's customer_list tag; its customer_reports are
    # view mirrors now, left to the view's refresh).
    assert {t.tag for t in rule.targets} == {TAG_CUSTOMER_LISTS}
    # The customer's own hash goes on every update, significant or not.
    assert CUSTOMER_ENTITY.fires(Operation.UPDATE, BASE, new) is True


def test_inserts_and_deletes_of_customers() -> None:
    for op, old, new in ((Operation.INSERT, None, BASE), (Operation.DELETE, BASE, None)):
        assert CUSTOMER_LISTS_ON_SIGNIFICANT_CHANGE.fires(op, old, new) is False
        assert CUSTOMER_LISTS_ON_MEMBERSHIP.fires(op, old, new) is True
    assert CUSTOMER_ENTITY.fires(Operation.DELETE, BASE, None) is True
    # A customer that did not exist may be cached as absent under its id.
    assert CUSTOMER_ENTITY.fires(Operation.INSERT, None, BASE) is True
    assert CUSTOMER_LISTS_ON_MEMBERSHIP.fires(Operation.UPDATE, BASE, BASE) is False


def test_rules_target_own_schemas_with_exactly_their_parameters() -> None:
    names = [r.name for r in ALL_RULES]
    assert len(set(names)) == len(names)
    for rule in ALL_RULES:
        assert rule.name.startswith("hs.")
        assert rule.table.startswith("hs.")
        assert rule.targets
        for target in rule.targets:
            assert (target.schema is None) != (target.tag is None), rule.name
            if target.tag is not None:
                assert target.tag in TAGS, (rule.name, target.tag)
            else:
                schema = SCHEMAS[target.schema or ""]
                assert set(target.params) == {p.name for p in schema.params}, rule.name


def test_every_cached_absence_is_dropped_by_what_makes_the_row_appear() -> None:
    views = {v.name: v for v in ALL_VIEWS}
    for schema in ALL_SCHEMAS:
        if schema.negative_ttl is None:
            continue
        if schema.mirrors is not None:
            # A row appears in a view at its refresh, which drops the view's tags.
            assert set(schema.tags) & set(views[schema.mirrors].tags), schema.name
            continue
        inserts = [r for r in ALL_RULES if Operation.INSERT in r.operations
                   and any(t.schema == schema.name or t.tag in schema.tags
                           for t in r.targets)]
        assert inserts, f"{schema.name} caches absence but no rule fires on INSERT"


def test_no_rule_reaches_a_view_mirror() -> None:
    mirrors = [s for s in ALL_SCHEMAS if s.mirrors is not None]
    # Every entry loaded from a view says so.
    assert {s.name for s in mirrors} == {
        "hs.customer_summary", "hs.technician_performance", "hs.financial_daily",
        "hs.service_area"}
    for rule in ALL_RULES:
        for target in rule.targets:
            for schema in mirrors:
                assert target.schema != schema.name, (rule.name, schema.name)
                assert target.tag not in schema.tags, (rule.name, schema.name)
    # Invoices and inspections feed the views only.
    assert {r.table for r in ALL_RULES} == {"hs.customers", "hs.work_orders",
                                            "hs.service_areas"}


def target_keys(rule: InvalidationRule, row: dict[str, Any]) -> list[str]:
    """The keys a rule's schema targets name for one row (as the engine will build them)."""
    out = []
    for target in rule.targets:
        if target.schema is None:
            continue
        params = {p: row[c] for p, c in target.params.items()}
        if any(v is None for v in params.values()):
            continue  # an unassigned work order names no schedule
        out.append(SCHEMAS[target.schema].key(row[rule.tenant_column], **params).body)
    return out


async def test_rule_columns_exist_and_rows_build_keys(hs_db: LoadedDb) -> None:
    for rule in ALL_RULES:
        schema, table = rule.table.split(".")
        columns = {r["column_name"] for r in await hs_db.conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2", schema, table)}
        wanted = {rule.tenant_column, *rule.significant_columns}
        wanted |= {c for t in rule.targets for c in t.params.values()}
        assert wanted <= columns, (rule.name, wanted - columns)
        # Real rows (typed by asyncpg as the engine will see them) build valid keys.
        rows = await hs_db.conn.fetch(f"SELECT * FROM {rule.table} LIMIT 50")  # noqa: S608
        assert rows, rule.table
        for row in rows:
            for body in target_keys(rule, dict(row)):
                assert body.startswith("{" + row["tenant_id"] + "}:hs.")


async def test_schedule_rule_names_the_day_of_the_row(hs_db: LoadedDb) -> None:
    row = dict(await hs_db.conn.fetchrow(
        "SELECT * FROM hs.work_orders WHERE assigned_technician_id IS NOT NULL LIMIT 1"))
    keys = target_keys(WORK_ORDER_SCHEDULE, row)
    day = row["scheduled_day"].isoformat()
    assert keys == [
        f"{{{row['tenant_id']}}}:hs.technician_schedule:{row['assigned_technician_id']}:{day}",
        f"{{{row['tenant_id']}}}:hs.schedule_geo:{day}",
    ]
    unassigned = {**row, "assigned_technician_id": None}
    assert target_keys(WORK_ORDER_SCHEDULE, unassigned) == [
        f"{{{row['tenant_id']}}}:hs.schedule_geo:{day}"]
