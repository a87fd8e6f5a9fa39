"""The data generator: deterministic, tenant-independent, and referentially sound."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thorbis_home_services import datagen
from thorbis_home_services.models import (
    AccountStatus,
    CustomerType,
    PaymentStatus,
    Priority,
    TechnicianRole,
    WorkOrderStatus,
)

REF = dt.date(2024, 6, 3)


def test_same_seed_same_rows() -> None:
    a = datagen.generate(["acme", "globex"], 40, seed=1, reference=REF)
    b = datagen.generate(["acme", "globex"], 40, seed=1, reference=REF)
    assert a == b
    assert a.counts() == b.counts()


def test_another_seed_other_rows() -> None:
    a = datagen.generate(["acme"], 40, seed=1, reference=REF)
    b = datagen.generate(["acme"], 40, seed=2, reference=REF)
    assert a.customers != b.customers


def test_a_tenants_rows_do_not_depend_on_the_other_tenants() -> None:
    alone = datagen.generate(["acme"], 30, seed=5, reference=REF)
    both = datagen.generate(["globex", "acme"], 30, seed=5, reference=REF)
    for table in datagen.TABLES:
        assert alone.rows(table) == tuple(r for r in both.rows(table) if r[0] == "acme")


def test_tenant_count_and_reference() -> None:
    data = datagen.generate(3, 5, reference=dt.datetime(2024, 6, 3, 17, 30, tzinfo=dt.UTC))
    assert data.tenants == ("hs-001", "hs-002", "hs-003")
    assert data.reference == dt.datetime(2024, 6, 3, tzinfo=dt.UTC)
    assert {r[0] for r in data.customers} == set(data.tenants)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        datagen.generate(["acme", "acme"])
    with pytest.raises(ValueError, match="per_tenant"):
        datagen.generate(["acme"], 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        datagen.generate(["acme"], reference=dt.datetime(2024, 6, 3))
    with pytest.raises(KeyError, match="unknown table"):
        datagen.generate(["acme"], 1).rows("users")


def test_the_data_has_the_shapes_the_views_and_patterns_need() -> None:
    data = datagen.generate(["acme"], 120, seed=0, reference=REF)
    orders = list(data.records("work_orders"))
    ref = data.reference
    assert any(o["scheduled_at"].date() == REF and o["assigned_technician_id"] is not None
               and o["status"] != "cancelled" for o in orders)
    assert {o["status"] for o in orders} == {s.value for s in WorkOrderStatus}
    assert {o["priority"] for o in orders} == {p.value for p in Priority}
    completed = Counter(o["customer_id"] for o in orders if o["status"] == "completed")
    assert sum(n >= 3 for n in completed.values()) >= 10  # next-service predictions
    assert any(o["created_at"] >= ref - dt.timedelta(days=90) for o in orders)
    per_order = Counter(i["work_order_id"] for i in data.records("invoices"))
    assert max(per_order.values()) == 2  # the fan-out the seed's views got wrong
    inspected = Counter(q["work_order_id"] for q in data.records("quality_control_inspections"))
    assert max(inspected.values()) == 2
    assert {t["role"] for t in data.records("technicians")} == {r.value for r in TechnicianRole}


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=30))
def test_rows_are_referentially_sound(seed: int, per_tenant: int) -> None:
    data = datagen.generate(["acme", "globex"], per_tenant, seed=seed, reference=REF)
    ids = {t: {(r[0], r[1]) for r in data.rows(t)} for t in datagen.TABLES}
    for table, keys in ids.items():
        assert len(keys) == len(data.rows(table)), f"duplicate ids in {table}"
    for c in data.records("customers"):
        assert (c["tenant_id"], c["service_area_id"]) in ids["service_areas"]
        CustomerType(c["customer_type"])
        AccountStatus(c["account_status"])
        PaymentStatus(c["payment_status"])
        assert -180 <= c["longitude"] <= 180
        assert -85.05 <= c["latitude"] <= 85.05
    for t in data.records("technicians"):
        assert (t["tenant_id"], t["home_service_area_id"]) in ids["service_areas"]
    created = {(c["tenant_id"], c["id"]): c["created_at"] for c in data.records("customers")}
    for o in data.records("work_orders"):
        tenant = o["tenant_id"]
        assert (tenant, o["customer_id"]) in ids["customers"]
        assert o["created_at"] >= created[tenant, o["customer_id"]]
        assert (tenant, o["service_area_id"]) in ids["service_areas"]
        technician = o["assigned_technician_id"]
        assert technician is None or (tenant, technician) in ids["technicians"]
        assert (technician is None) == (o["status"] == "pending")
        assert (o["completed_at"] is not None) == (o["status"] == "completed")
        if o["completed_at"] is not None:
            assert o["started_at"] <= o["completed_at"] < data.reference
    for i in data.records("invoices"):
        assert (i["tenant_id"], i["work_order_id"]) in ids["work_orders"]
        assert i["total_amount"] == i["subtotal_amount"] + i["tax_amount"]
        assert i["created_at"] <= data.reference
    for q in data.records("quality_control_inspections"):
        assert (q["tenant_id"], q["work_order_id"]) in ids["work_orders"]
        assert q["inspector_id"] is None or (q["tenant_id"], q["inspector_id"]) in ids[
            "technicians"]
        assert 0 <= q["overall_rating"] <= 5
