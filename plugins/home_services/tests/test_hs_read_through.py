"""Every pattern with ``fetch=``: read through a cold cache (single Redis and Cluster) --
the first call loads from PostgreSQL and caches, the second is answered by the cache
without a query, the answer equals the database's, and the same pattern without
``fetch`` then answers the same from the cache."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from hs_testing import CountingFetch, LoadedDb, never
from thorbis_cache import Cache
from thorbis_cache.cache.geo import geo_distance
from thorbis_cache.errors import MissingRow

from thorbis_home_services import loaders, patterns
from thorbis_home_services.models import CustomerSegment, NearbyArea, ServiceAreaMetrics
from thorbis_home_services.predict import predict_next_service
from thorbis_home_services.schemas import CUSTOMER, SERVICE_AREA, WORK_ORDER
from thorbis_home_services.scoring import score_of

TODAY = dt.datetime.now(dt.UTC).date()
TENANT = "acme"


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def same(a: Any, b: Any) -> bool:
    """Equal answers; distances (the last element of a pair, or ``distance_m``) within a
    metre: a geo read answered from loaded positions measures from exact coordinates,
    one answered by Redis from its 52-bit geohash cells."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, tuple) and isinstance(a[-1], float) and isinstance(b, tuple):
        return a[:-1] == b[:-1] and abs(a[-1] - b[-1]) < 1.0
    if isinstance(a, NearbyArea) and isinstance(b, NearbyArea):
        return ((a.area_id, a.metrics) == (b.area_id, b.metrics)
                and abs(a.distance_m - b.distance_m) < 1.0)
    return bool(a == b)


async def through(
    cache: Cache, pool: asyncpg.Pool, read: Callable[..., Awaitable[Any]]
) -> Any:
    """Call ``read(cache, fetch=...)`` twice on a cold cache and once without ``fetch``:
    the first loads, the others are answered by the cache alone; returns the answer."""
    counting = CountingFetch(pool.fetch)
    first = await read(cache, fetch=counting)
    assert counting.calls > 0, "the first read-through did not load"
    loaded = counting.calls
    second = await read(cache, fetch=counting)
    assert counting.calls == loaded, "the second read-through loaded again"
    assert same(second, first), (second, first)
    cached = await read(cache)  # what was read through is cached
    assert same(cached, first), (cached, first)
    return first


async def test_top_customers(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    for segment in CustomerSegment:
        got = await through(hs_cache, hs_pool, functools.partial(
            patterns.top_customers, tenant=TENANT, segment=segment, n=5))
        members = await loaders.customer_list(hs_db.fetch, TENANT, segment)
        assert [v for _, v in got] == sorted(members.values(), reverse=True)[:5]
        assert all(members[c] == v for c, v in got)


async def test_high_priority_work_orders(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    board = await through(hs_cache, hs_pool, lambda c, **kw: patterns.high_priority_work_orders(
        c, TENANT, limit=10, **kw))
    actionable = [o for o in await loaders.open_work_orders(hs_db.fetch, TENANT)
                  if o.status in patterns.ACTIONABLE_STATUSES]
    expected = sorted(actionable, key=lambda o: (-score_of(o), o.id))[:10]
    assert [r.order for r in board] == expected
    assert [r.score for r in board] == [score_of(o) for o in expected]
    # The orders were read through too.
    for order in expected:
        assert await hs_cache.get(WORK_ORDER.key(TENANT, work_order_id=order.id)) == order


async def test_high_priority_reports_a_deleted_order_as_none(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    board = await patterns.high_priority_work_orders(hs_cache, TENANT, limit=3,
                                                     fetch=hs_pool.fetch)
    gone = board[0].work_order_id
    # The list still names an order whose row is gone and whose entry is not cached.
    await hs_db.conn.execute("DELETE FROM hs.quality_control_inspections "
                             "WHERE tenant_id = $1 AND work_order_id = $2", TENANT, gone)
    await hs_db.conn.execute("DELETE FROM hs.invoices WHERE tenant_id = $1 "
                             "AND work_order_id = $2", TENANT, gone)
    await hs_db.conn.execute("DELETE FROM hs.work_orders WHERE tenant_id = $1 AND id = $2",
                             TENANT, gone)
    await hs_cache.delete(WORK_ORDER.key(TENANT, work_order_id=gone))
    again = await patterns.high_priority_work_orders(hs_cache, TENANT, limit=3,
                                                     fetch=hs_pool.fetch)
    assert [r.work_order_id for r in again] == [r.work_order_id for r in board]
    assert again[0].order is None
    assert again[1:] == board[1:]


async def test_technician_day_and_appointments_near(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    today = await loaders.day_appointments(hs_db.fetch, TENANT, TODAY)
    assert today
    technician = today[0].assigned_technician_id
    assert technician is not None
    day = await through(hs_cache, hs_pool, lambda c, **kw: patterns.technician_day(
        c, TENANT, technician_id=technician, day=TODAY, **kw))
    mine = sorted((o for o in today if o.assigned_technician_id == technician),
                  key=lambda o: (o.scheduled_at, o.id))
    assert day == [(o.id, o.scheduled_at) for o in mine]

    first = today[0]
    near = await through(hs_cache, hs_pool, lambda c, **kw: patterns.appointments_near(
        c, TENANT, day=TODAY, longitude=first.longitude, latitude=first.latitude,
        radius_m=200_000, **kw))
    assert {wo for wo, _ in near} == {o.id for o in today}
    assert near[0][1] <= 1.0
    distances = [d for _, d in near]
    assert distances == sorted(distances)


async def test_appointments_near_of_one_technician(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    today = await loaders.day_appointments(hs_db.fetch, TENANT, TODAY)
    technician = today[-1].assigned_technician_id
    got = await through(hs_cache, hs_pool, lambda c, **kw: patterns.appointments_near(
        c, TENANT, day=TODAY, longitude=today[-1].longitude, latitude=today[-1].latitude,
        radius_m=500_000, technician_id=technician, **kw))
    assert {wo for wo, _ in got} == {o.id for o in today
                                     if o.assigned_technician_id == technician}


async def test_recent_services_and_the_prediction(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    customer_id = await hs_db.conn.fetchval(
        "SELECT customer_id FROM hs.work_orders WHERE tenant_id = $1 AND status = 'completed' "
        "GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT 1", TENANT)
    history = await loaders.service_history(hs_db.fetch, TENANT, customer_id)
    assert len(history) >= 3
    recent = await through(hs_cache, hs_pool, lambda c, **kw: patterns.recent_services(
        c, TENANT, customer_id=customer_id, n=2, **kw))
    newest = sorted(history.items(), key=lambda ia: ia[1], reverse=True)[:2]
    assert recent == [(wo, _utc(at)) for wo, at in newest]
    predicted = await patterns.predicted_next_service(
        hs_cache, TENANT, customer_id=customer_id, fetch=hs_pool.fetch)
    assert predicted is not None
    assert predicted == predict_next_service(_utc(at) for at in history.values())


async def test_a_customer_without_history_is_cached_as_an_empty_series(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    customer_id = await hs_db.conn.fetchval(
        "SELECT c.id FROM hs.customers c WHERE c.tenant_id = $1 AND NOT EXISTS (SELECT 1 "
        "FROM hs.work_orders w WHERE w.tenant_id = c.tenant_id AND w.customer_id = c.id "
        "AND w.status = 'completed') ORDER BY c.id LIMIT 1", TENANT)
    assert customer_id is not None
    got = await through(hs_cache, hs_pool, lambda c, **kw: patterns.predicted_next_service(
        c, TENANT, customer_id=customer_id, **kw))
    assert got is None
    assert await patterns.recent_services(hs_cache, TENANT, customer_id=customer_id,
                                          fetch=never) == []


async def test_nearest_service_areas(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    areas = await loaders.service_area_metrics(hs_db.fetch, TENANT)
    target = areas[0]
    near = await through(hs_cache, hs_pool, lambda c, **kw: patterns.nearest_service_areas(
        c, TENANT, longitude=target.center_longitude, latitude=target.center_latitude,
        radius_m=1_000_000, count=len(areas), **kw))
    assert near[0].area_id == target.area_id
    assert {a.area_id: a.metrics for a in near} == {a.area_id: a for a in areas}
    def metres(a: ServiceAreaMetrics) -> float:
        return geo_distance(target.center_longitude, target.center_latitude,
                            a.center_longitude, a.center_latitude)

    expected = sorted(areas, key=metres)
    assert [a.area_id for a in near] == [a.area_id for a in expected]


async def test_an_area_newer_than_the_view_has_a_centre_and_no_metrics(
    hs_db: LoadedDb, hs_cache: Cache, hs_pool: asyncpg.Pool
) -> None:
    area = await hs_db.conn.fetchrow(
        "INSERT INTO hs.service_areas (tenant_id, id, name, center_longitude, center_latitude) "
        "VALUES ($1, 9001, 'New area', 10.0, 50.0) RETURNING id", TENANT)
    near = await patterns.nearest_service_areas(
        hs_cache, TENANT, longitude=10.0, latitude=50.0, radius_m=1000, fetch=hs_pool.fetch)
    assert [(a.area_id, a.metrics) for a in near] == [(area["id"], None)]
    # Its absence from the view is cached (negative_ttl) until the view's refresh.
    with pytest.raises(MissingRow):
        await hs_cache.hash(SERVICE_AREA.key(TENANT, area_id=9001)).get_or_load(never)


async def test_a_missing_entity_is_cached_as_absent(hs_db: LoadedDb, hs_cache: Cache) -> None:
    key = CUSTOMER.key(TENANT, customer_id=10_000_000)
    counting = CountingFetch(hs_db.fetch)
    for _ in range(3):
        with pytest.raises(MissingRow):
            await hs_cache.hash(key).get_or_load(
                lambda: loaders.customer(counting, TENANT, 10_000_000))
    assert counting.calls == 1
