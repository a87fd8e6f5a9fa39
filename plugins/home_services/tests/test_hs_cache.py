"""Every home-services schema and pattern through a real Cache, on a single Redis and on
a 3-master Cluster (``hs_cache`` is parametrized over both topologies)."""

from __future__ import annotations

import datetime as dt
import decimal
import math

import attrs
import pytest
from thorbis_cache import Cache
from thorbis_cache.errors import VersionConflictError

from thorbis_home_services import patterns, writers
from thorbis_home_services.models import (
    AccountStatus,
    Customer,
    CustomerSegment,
    CustomerSummary,
    CustomerType,
    PaymentStatus,
    Priority,
    ServiceAreaMetrics,
    WorkOrder,
    WorkOrderStatus,
)
from thorbis_home_services.predict import predict_next_service
from thorbis_home_services.schemas import (
    CUSTOMER,
    CUSTOMER_HISTORY,
    CUSTOMER_SUMMARY,
    SERVICE_AREA,
    TECHNICIAN_SCHEDULE,
    WORK_ORDER,
    WORK_ORDERS_BY_STATUS,
)
from thorbis_home_services.scoring import work_order_score

T0 = dt.datetime(2024, 6, 3, 9, 0, tzinfo=dt.UTC)
DAY = T0.date()
# Austin: degrees of longitude are ~96 km here, of latitude ~111 km.
LON, LAT = -97.7431, 30.2672


def customer(n: int = 1, status: AccountStatus = AccountStatus.ACTIVE) -> Customer:
    return Customer(
        id=n, first_name="Ana", last_name="Diaz", email=f"ana{n}@example.com",
        phone="+1-555-100-2000", customer_type=CustomerType.RESIDENTIAL,
        account_status=status, payment_status=PaymentStatus.CURRENT, service_area_id=1,
        street="1 Oak St", city="Austin", postal_code="78701", longitude=LON, latitude=LAT,
        created_at=T0, updated_at=T0,
    )


def order(
    n: int,
    *,
    status: WorkOrderStatus = WorkOrderStatus.SCHEDULED,
    priority: Priority = Priority.STANDARD,
    at: dt.datetime = T0,
    technician: int | None = 1,
    lon: float = LON,
    lat: float = LAT,
    customer_id: int = 1,
) -> WorkOrder:
    return WorkOrder(
        id=n, customer_id=customer_id, assigned_technician_id=technician, service_area_id=1,
        status=status, priority=priority, service_type="plumbing_repair", description="leak",
        scheduled_at=at, estimated_minutes=60, started_at=None, completed_at=None,
        travel_time_minutes=None, longitude=lon, latitude=lat, created_at=T0, updated_at=T0,
    )


def area(n: int, lon: float, lat: float) -> ServiceAreaMetrics:
    return ServiceAreaMetrics(
        area_id=n, name=f"Area {n}", zip_codes=["78701", "78702"], center_longitude=lon,
        center_latitude=lat, total_work_orders=10 * n, avg_travel_minutes=22.5,
        area_revenue=decimal.Decimal("1234.50"), unique_customers=n,
        avg_quality_rating=None, emergency_calls=n,
    )


# --------------------------------------------------------------------------- keys


def test_keys_follow_the_documented_layout() -> None:
    assert CUSTOMER.key("acme", customer_id=42).body == "{acme}:hs.customer:42"
    key = WORK_ORDERS_BY_STATUS.key("acme", status=WorkOrderStatus.IN_PROGRESS)
    assert key.body == "{acme}:hs.work_orders_by_status:in_progress"
    key = TECHNICIAN_SCHEDULE.key("acme", technician_id=7, day=DAY)
    assert key.body == "{acme}:hs.technician_schedule:7:2024-06-03"


# --------------------------------------------------------------------------- customers


async def test_customer_hash_has_an_optimistic_version(hs_cache: Cache) -> None:
    ann = customer(1)
    assert await writers.store_customer(hs_cache, "acme", ann) == 1
    entity = hs_cache.hash(CUSTOMER.key("acme", customer_id=1))
    got = await entity.get_versioned()
    assert got is not None
    assert got.value == ann
    assert got.version == 1
    version = await entity.update({"account_status": AccountStatus.VIP}, expected_version=1)
    assert version == 2
    assert await entity.get() == attrs.evolve(ann, account_status=AccountStatus.VIP)
    # A writer that read version 1 loses.
    with pytest.raises(VersionConflictError):
        await entity.update({"phone": "+1-555-000-0000"}, expected_version=1)
    assert await entity.get_fields("phone") == {"phone": ann.phone}
    # Another tenant's customer 1 is another key.
    assert await hs_cache.hash(CUSTOMER.key("globex", customer_id=1)).get() is None


async def test_customer_hash_is_encrypted_at_rest(hs_cache: Cache) -> None:
    await writers.store_customer(hs_cache, "acme", customer(3))
    raw = await hs_cache.store.command("HGETALL", hs_cache.redis_key(
        CUSTOMER.key("acme", customer_id=3)))
    blob = b"".join(v for v in (raw.values() if isinstance(raw, dict) else raw[1::2]))
    assert b"ana3@example.com" not in blob
    assert b"Diaz" not in blob


async def test_customer_lists_rank_by_lifetime_value(hs_cache: Cache) -> None:
    values = {1: 10.0, 2: 500.0, 3: 75.5, 4: 0.0}
    statuses = {1: AccountStatus.ACTIVE, 2: AccountStatus.VIP, 3: AccountStatus.INACTIVE,
                4: AccountStatus.VIP}
    for segment in CustomerSegment:
        members = {c: v for c, v in values.items() if segment.includes(statuses[c])}
        await writers.store_customer_list(hs_cache, "acme", segment, members)
    assert await patterns.top_customers(hs_cache, "acme", n=3) == [
        (2, 500.0), (3, 75.5), (1, 10.0)]
    assert await patterns.top_customers(hs_cache, "acme", segment=CustomerSegment.ACTIVE) == [
        (2, 500.0), (1, 10.0), (4, 0.0)]
    assert await patterns.top_customers(hs_cache, "acme", segment=CustomerSegment.VIP) == [
        (2, 500.0), (4, 0.0)]
    # Replacing a list drops members that left it.
    await writers.store_customer_list(hs_cache, "acme", CustomerSegment.VIP, {2: 500.0})
    assert await patterns.top_customers(hs_cache, "acme", segment=CustomerSegment.VIP) == [
        (2, 500.0)]
    assert await patterns.top_customers(hs_cache, "globex") == []


async def test_customer_summary_is_a_value(hs_cache: Cache) -> None:
    summary = CustomerSummary(
        customer_id=5, first_name="Ana", last_name="Diaz", email="a@x", phone="1",
        customer_type=CustomerType.COMMERCIAL, account_status=AccountStatus.VIP,
        payment_status=PaymentStatus.OVERDUE_30, total_work_orders=4, completed_orders=3,
        lifetime_value=decimal.Decimal("1520.75"), last_service_at=T0, created_at=T0,
        updated_at=T0,
    )
    key = CUSTOMER_SUMMARY.key("acme", customer_id=5)
    loads = 0

    async def load() -> CustomerSummary:
        nonlocal loads
        loads += 1
        return summary

    assert await hs_cache.get_or_load(key, load) == summary
    assert await hs_cache.get_or_load(key, load) == summary
    assert loads == 1


# --------------------------------------------------------------------------- work orders


async def test_high_priority_merges_status_lists_by_the_seed_score(hs_cache: Cache) -> None:
    day = dt.timedelta(days=1)
    pending = [order(1, status=WorkOrderStatus.PENDING, priority=Priority.EMERGENCY,
                     technician=None),
               order(2, status=WorkOrderStatus.PENDING, priority=Priority.LOW, at=T0 + day)]
    scheduled = [order(3, priority=Priority.URGENT, at=T0 - day),
                 order(4, priority=Priority.HIGH),
                 order(5, priority=Priority.STANDARD, at=T0 + 30 * day)]
    dispatched = [order(6, status=WorkOrderStatus.DISPATCHED, priority=Priority.URGENT)]
    held = [order(7, status=WorkOrderStatus.ON_HOLD, priority=Priority.EMERGENCY,
                  at=T0 + 60 * day)]
    everything = pending + scheduled + dispatched + held
    for status, orders in ((WorkOrderStatus.PENDING, pending),
                           (WorkOrderStatus.SCHEDULED, scheduled),
                           (WorkOrderStatus.DISPATCHED, dispatched),
                           (WorkOrderStatus.ON_HOLD, held)):
        assert await writers.store_work_orders_by_status(hs_cache, "acme", status, orders) == len(
            orders)
    ranked = await patterns.high_priority_work_orders(hs_cache, "acme", limit=10)
    actionable = [o for o in everything if o.status is not WorkOrderStatus.ON_HOLD]
    expected = sorted(actionable, key=lambda o: (-work_order_score(o.priority, o.scheduled_at),
                                                 o.id))
    assert [r.work_order_id for r in ranked] == [o.id for o in expected]
    assert [r.order for r in ranked] == expected
    assert all(r.score == work_order_score(r.order.priority, r.order.scheduled_at)
               for r in ranked if r.order is not None)
    # The seed's weights act as time shifts: a standard order 30 days out beats an
    # emergency now, which beats an urgent order now; a low order tomorrow beats an
    # urgent order of yesterday and a high one of now.
    assert [r.work_order_id for r in ranked] == [5, 1, 6, 2, 3, 4]
    top2 = await patterns.high_priority_work_orders(hs_cache, "acme", limit=2)
    assert [r.work_order_id for r in top2] == [5, 1]
    only_held = await patterns.high_priority_work_orders(
        hs_cache, "acme", statuses=[WorkOrderStatus.ON_HOLD])
    assert [r.work_order_id for r in only_held] == [7]
    assert await patterns.high_priority_work_orders(hs_cache, "acme", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        await patterns.high_priority_work_orders(hs_cache, "acme", limit=-1)


async def test_high_priority_counts_an_order_in_two_lists_once(hs_cache: Cache) -> None:
    moved = order(9, status=WorkOrderStatus.DISPATCHED, priority=Priority.HIGH)
    await writers.store_work_orders_by_status(
        hs_cache, "acme", WorkOrderStatus.SCHEDULED,
        [attrs.evolve(moved, status=WorkOrderStatus.SCHEDULED)])
    await writers.store_work_orders_by_status(
        hs_cache, "acme", WorkOrderStatus.DISPATCHED, [moved])
    # The entry of one order has expired meanwhile: reported, with no order.
    await hs_cache.delete(WORK_ORDER.key("acme", work_order_id=9))
    ranked = await patterns.high_priority_work_orders(hs_cache, "acme")
    assert len(ranked) == 1
    assert ranked[0].work_order_id == 9
    assert ranked[0].order is None


async def test_a_status_list_only_takes_orders_of_its_status(hs_cache: Cache) -> None:
    with pytest.raises(ValueError, match="not 'pending'"):
        await writers.store_work_orders_by_status(
            hs_cache, "acme", WorkOrderStatus.PENDING, [order(1)])


# --------------------------------------------------------------------------- schedules


async def test_technician_day_and_appointments_within_a_radius(hs_cache: Cache) -> None:
    hour = dt.timedelta(hours=1)
    km_lat = 1 / 111.2  # degrees of latitude per km
    day_orders = [
        order(11, technician=1, at=T0 + 3 * hour, lat=LAT + 1 * km_lat),  # 1 km north
        order(12, technician=1, at=T0, lat=LAT + 5 * km_lat),  # 5 km
        order(13, technician=2, at=T0 + hour, lat=LAT + 2 * km_lat),  # 2 km
        order(14, technician=2, at=T0 + 2 * hour, lat=LAT + 20 * km_lat),  # 20 km
    ]
    counts = await writers.store_day_appointments(hs_cache, "acme", DAY, day_orders)
    assert counts == {1: 2, 2: 2}
    assert await patterns.technician_day(hs_cache, "acme", technician_id=1, day=DAY) == [
        (12, T0), (11, T0 + 3 * hour)]
    near = await patterns.appointments_near(
        hs_cache, "acme", day=DAY, longitude=LON, latitude=LAT, radius_m=6000)
    assert [wo for wo, _ in near] == [11, 13, 12]
    for (_, metres), km in zip(near, (1, 2, 5)):
        assert math.isclose(metres, km * 1000, rel_tol=0.01)
    mine = await patterns.appointments_near(
        hs_cache, "acme", day=DAY, longitude=LON, latitude=LAT, radius_m=30_000,
        technician_id=2)
    assert [wo for wo, _ in mine] == [13, 14]
    one = await patterns.appointments_near(
        hs_cache, "acme", day=DAY, longitude=LON, latitude=LAT, radius_m=30_000,
        technician_id=2, count=1)
    assert [wo for wo, _ in one] == [13]
    assert await patterns.appointments_near(
        hs_cache, "acme", day=DAY, longitude=LON, latitude=LAT, radius_m=30_000,
        technician_id=3) == []
    other_day = DAY + dt.timedelta(days=1)
    assert await patterns.appointments_near(
        hs_cache, "acme", day=other_day, longitude=LON, latitude=LAT, radius_m=30_000) == []


async def test_a_day_only_takes_assigned_orders_of_that_day(hs_cache: Cache) -> None:
    with pytest.raises(ValueError, match="no technician"):
        await writers.store_day_appointments(hs_cache, "acme", DAY, [order(1, technician=None)])
    with pytest.raises(ValueError, match="not scheduled on"):
        await writers.store_day_appointments(
            hs_cache, "acme", DAY + dt.timedelta(days=1), [order(1)])


# --------------------------------------------------------------------------- history


async def test_service_history_is_a_time_series(hs_cache: Cache) -> None:
    completions = [(100 + i, T0 - dt.timedelta(days=90 * i)) for i in range(5)]
    await writers.store_service_history(hs_cache, "acme", 8, completions)
    recent = await patterns.recent_services(hs_cache, "acme", customer_id=8, n=3)
    assert recent == [(100, T0), (101, T0 - dt.timedelta(days=90)),
                      (102, T0 - dt.timedelta(days=180))]
    assert len(await patterns.recent_services(hs_cache, "acme", customer_id=8, n=50)) == 5
    assert await patterns.recent_services(hs_cache, "acme", customer_id=8, n=0) == []
    with pytest.raises(ValueError, match="n must"):
        await patterns.recent_services(hs_cache, "acme", customer_id=8, n=-1)
    predicted = await patterns.predicted_next_service(hs_cache, "acme", customer_id=8)
    assert predicted == predict_next_service(at for _, at in completions)
    assert predicted is not None
    assert predicted.due_at == T0 + dt.timedelta(days=90)
    # One service: no interval, no prediction.
    await writers.store_service_history(hs_cache, "acme", 9, completions[:1])
    assert await patterns.predicted_next_service(hs_cache, "acme", customer_id=9) is None
    assert await patterns.predicted_next_service(hs_cache, "acme", customer_id=10) is None
    series = hs_cache.zset(CUSTOMER_HISTORY.key("acme", customer_id=8))
    assert await series.card() == 5


# --------------------------------------------------------------------------- service areas


async def test_nearest_service_areas_with_their_metrics(hs_cache: Cache) -> None:
    areas = [area(1, LON, LAT), area(2, LON + 0.1, LAT), area(3, LON + 0.5, LAT),
             area(4, LON - 2.0, LAT)]
    assert await writers.store_service_areas(hs_cache, "acme", areas) == 4
    near = await patterns.nearest_service_areas(
        hs_cache, "acme", longitude=LON + 0.01, latitude=LAT, radius_m=100_000, count=2)
    assert [a.area_id for a in near] == [1, 2]
    assert near[0].metrics == areas[0]
    assert near[0].distance_m < near[1].distance_m
    wide = await patterns.nearest_service_areas(
        hs_cache, "acme", longitude=LON, latitude=LAT, radius_m=100_000, count=10)
    assert [a.area_id for a in wide] == [1, 2, 3]  # area 4 is ~190 km west
    # A hash: one metric is patched without rewriting the area.
    metrics = hs_cache.hash(SERVICE_AREA.key("acme", area_id=2))
    await metrics.update({"emergency_calls": 9})
    assert await metrics.get() == attrs.evolve(areas[1], emergency_calls=9)
    # Replacing the areas drops the centres of areas that are gone.
    await writers.store_service_areas(hs_cache, "acme", areas[1:2])
    near = await patterns.nearest_service_areas(
        hs_cache, "acme", longitude=LON, latitude=LAT, radius_m=100_000)
    assert [a.area_id for a in near] == [2]


async def test_patterns_on_a_cold_cache_answer_empty(hs_cache: Cache) -> None:
    assert await patterns.high_priority_work_orders(hs_cache, "acme") == []
    assert await patterns.technician_day(hs_cache, "acme", technician_id=1, day=DAY) == []
    assert await patterns.appointments_near(
        hs_cache, "acme", day=DAY, longitude=LON, latitude=LAT, radius_m=1000) == []
    assert await patterns.recent_services(hs_cache, "acme", customer_id=1) == []
    assert await patterns.predicted_next_service(hs_cache, "acme", customer_id=1) is None
    assert await patterns.nearest_service_areas(
        hs_cache, "acme", longitude=LON, latitude=LAT, radius_m=1000) == []
    assert await patterns.top_customers(hs_cache, "acme") == []
