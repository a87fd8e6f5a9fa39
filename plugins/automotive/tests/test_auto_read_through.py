"""Read-through against real PostgreSQL and Redis (single server and cluster): each
loader of a key schema returns what PostgreSQL holds, in the shape of its key's kind;
each pattern given ``fetch`` loads on its first call, hits on the second and answers
what PostgreSQL holds; the warmers fill under leases, and a row changed and invalidated
between a batch's lease and its write is refused, not cached."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import pytest
from auto_testing import CountingFetch, LoadedDb, warm_tenant
from thorbis_cache import Cache, MissingRow
from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.plugins.declarations import WarmContext
from thorbis_cache.warming import WarmBatch, WarmOutcome, warm

from thorbis_automotive import datagen, labor, loaders, patterns
from thorbis_automotive.labor import estimated_amount
from thorbis_automotive.models import LaborQuote
from thorbis_automotive.schemas import (
    LABOR_SEASONALITY,
    MAKE_MODEL,
    PART,
    PARTS_BY_STOCK,
    PARTS_REORDER_MARGIN,
    SERVICE_TYPE,
    vehicle_history_key,
)
from thorbis_automotive.warmers import labor_warmer, parts_warmer, vehicles_warmer

CODES = [code for code, *_ in datagen.SERVICE_CATALOGUE]
#: A VIN with a valid check digit that no generated vehicle has.
UNKNOWN_VIN = "1M8GDM9AXKP042788"


def records(db: LoadedDb, table: str, tenant: str = "acme") -> list[dict[str, Any]]:
    return [r for r in db.data.records(table) if r["tenant_id"] == tenant]


def first_vehicle(db: LoadedDb) -> dict[str, Any]:
    return records(db, "vehicles")[0]


def last_work_day(db: LoadedDb) -> dt.date:
    return max(r["completed_at"] for r in records(db, "repair_orders")
               if r["completed_at"] is not None).date()


# --------------------------------------------------------------------------- loaders


async def test_service_type_loader(auto_db: LoadedDb) -> None:
    row = records(auto_db, "service_types")[0]
    kind = await loaders.service_type(auto_db.fetch, "acme", row["code"])
    assert (kind.code, kind.name, kind.interval_miles, kind.interval_days,
            kind.standard_hours, kind.labor_rate) == (
        row["code"], row["name"], row["interval_miles"], row["interval_days"],
        float(row["standard_hours"]), row["labor_rate"])
    assert await loaders.service_types(auto_db.fetch, "acme", [row["code"], "nope"]) == [kind]
    assert await loaders.service_type_codes(auto_db.fetch, "acme") == sorted(CODES)
    with pytest.raises(MissingRow) as info:
        await loaders.service_type(auto_db.fetch, "acme", "nope")
    assert (info.value.what, info.value.tenant, info.value.ident) == (
        "auto.service_types", "acme", "nope")


async def test_labor_seasonality_loader_reads_the_view(auto_db: LoadedDb) -> None:
    rows = await auto_db.conn.fetch(
        "SELECT month, jobs, labor_hours FROM auto.labor_monthly "
        "WHERE tenant_id = 'acme' AND service_type = 'oil_change'")
    monthly = {r["month"]: (r["jobs"], float(r["labor_hours"])) for r in rows}
    assert monthly
    seasonality = await loaders.labor_seasonality(auto_db.fetch, "acme", "oil_change")
    jobs = sum(n for n, _ in monthly.values())
    assert seasonality.jobs == jobs
    assert seasonality.mean_hours == pytest.approx(sum(h for _, h in monthly.values()) / jobs)
    assert seasonality.monthly_factors == labor.seasonal_factors(monthly)
    # No history is a fact, not a missing row: every factor 1.
    none = await loaders.labor_seasonality(auto_db.fetch, "acme", "nope")
    assert (none.jobs, none.mean_hours, none.monthly_factors) == (0, None, [1.0] * 12)


async def test_make_model_loaders_return_whole_sets(auto_db: LoadedDb) -> None:
    expected: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for v in records(auto_db, "vehicles"):
        expected[(v["make"], v["model"])][v["vin"]] = float(v["model_year"])
    pairs = await loaders.make_model_pairs(auto_db.fetch, "acme")
    assert pairs == sorted(expected)
    assert await loaders.make_model_sets(auto_db.fetch, "acme", [*pairs, ("No", "Such")]) == {
        **expected, ("No", "Such"): {}}
    make, model = pairs[0]
    assert await loaders.make_model_set(auto_db.fetch, "acme", make, model) == \
        expected[(make, model)]
    assert await loaders.make_model_set(auto_db.fetch, "globex", "No", "Such") == {}


async def test_stock_set_loaders_return_whole_sets(auto_db: LoadedDb) -> None:
    on_hand = {n: float(q) for (t, n), q in auto_db.data.on_hand().items() if t == "acme"}
    assert await loaders.parts_by_stock(auto_db.fetch, "acme") == on_hand
    assert await loaders.part_numbers(auto_db.fetch, "acme") == sorted(on_hand)
    parts = await loaders.all_parts(auto_db.fetch, "acme")
    margin = await loaders.parts_reorder_margin(auto_db.fetch, "acme")
    assert margin == {p.part_number: float(p.on_hand - p.reorder_point) for p in parts}
    assert set(margin) == set(on_hand)
    assert any(m <= 0 for m in margin.values())
    # Another tenant's numbers never leak in.
    globex = await loaders.parts_by_stock(auto_db.fetch, "globex")
    assert globex
    assert globex == {n: float(q) for (t, n), q in auto_db.data.on_hand().items()
                      if t == "globex"}


async def test_entity_loaders_raise_missing_row(auto_db: LoadedDb) -> None:
    with pytest.raises(MissingRow):
        await loaders.part(auto_db.fetch, "acme", "NOPE-00000")
    with pytest.raises(MissingRow):
        await loaders.vehicle_history(auto_db.fetch, "acme", UNKNOWN_VIN)


# --------------------------------------------------------------------------- patterns


@attrs.frozen
class PatternCase:
    """A pattern call, and the same answer computed from PostgreSQL by the loaders."""

    name: str
    call: Callable[[Cache, LoadedDb, Any], Awaitable[Any]]
    expected: Callable[[LoadedDb], Awaitable[Any]]


async def _low_stock_expected(db: LoadedDb, at_most: float | None) -> list[tuple[str, float]]:
    parts = await loaders.all_parts(db.fetch, "acme")
    if at_most is None:
        found = sorted((p.on_hand - p.reorder_point, p.part_number) for p in parts
                       if p.on_hand <= p.reorder_point)
    else:
        found = sorted((p.on_hand, p.part_number) for p in parts if p.on_hand <= at_most)
    return [(n, float(s)) for s, n in found[:5]]


async def _low_stock_answer(cache: Cache, db: LoadedDb, fetch: Any,
                            at_most: float | None) -> list[tuple[str, float]] | None:
    found = await patterns.low_stock(cache, "acme", at_most=at_most, limit=5, fetch=fetch)
    parts = {p.part_number: p for p in await loaders.all_parts(db.fetch, "acme")}
    # Every row carries its part as PostgreSQL has it.
    assert all(x.part == parts[x.part_number] for x in found)
    return [(x.part_number, x.score) for x in found]


async def _quote(db: LoadedDb) -> Any:
    kind = await loaders.service_type(db.fetch, "acme", "ac_service")
    seasonality = await loaders.labor_seasonality(db.fetch, "acme", "ac_service")
    hours = kind.standard_hours * seasonality.monthly_factors[6]
    return LaborQuote("ac_service", 7, seasonality.monthly_factors[6], hours,
                               estimated_amount(hours, kind.labor_rate))


def _vin(db: LoadedDb) -> str:
    return str(first_vehicle(db)["vin"])


PATTERN_CASES = [
    PatternCase(
        "vehicle_history",
        lambda c, db, f: patterns.vehicle_history(c, "acme", vin=_vin(db), fetch=f),
        lambda db: loaders.vehicle_history(db.fetch, "acme", _vin(db)),
    ),
    PatternCase(
        "next_services",
        lambda c, db, f: patterns.next_services(c, "acme", vin=_vin(db), n=2, fetch=f),
        lambda db: _schedule(db),
    ),
    PatternCase(
        "vehicles_of_model",
        lambda c, db, f: patterns.vehicles_of_model(
            c, "acme", make=first_vehicle(db)["make"], model=first_vehicle(db)["model"],
            fetch=f),
        lambda db: _model_vins(db),
    ),
    PatternCase(
        "low_stock",
        lambda c, db, f: _low_stock_answer(c, db, f, None),
        lambda db: _low_stock_expected(db, None),
    ),
    PatternCase(
        "low_stock_at_most",
        lambda c, db, f: _low_stock_answer(c, db, f, _stock_level(db)),
        lambda db: _low_stock_expected(db, _stock_level(db)),
    ),
    PatternCase(
        "part",
        lambda c, db, f: patterns.part(c, "acme", part_number=_part_number(db), fetch=f),
        lambda db: loaders.part(db.fetch, "acme", _part_number(db)),
    ),
    PatternCase(
        "part_demand",
        lambda c, db, f: patterns.part_demand(c, "acme", part_number=_busy_part(db), fetch=f),
        lambda db: loaders.part_demand(db.fetch, "acme", _busy_part(db)),
    ),
    PatternCase(
        "labor_quote",
        lambda c, db, f: patterns.labor_quote(c, "acme", service_type="ac_service", month=7,
                                              fetch=f),
        _quote,
    ),
    PatternCase(
        "bay_board",
        lambda c, db, f: patterns.bay_board(c, "acme", day=last_work_day(db), fetch=f),
        lambda db: loaders.bay_board(db.fetch, "acme", last_work_day(db)),
    ),
]


async def _schedule(db: LoadedDb) -> Any:
    return (await loaders.vehicle_history(db.fetch, "acme", _vin(db))).schedule[:2]


async def _model_vins(db: LoadedDb) -> list[tuple[str, int]]:
    v = first_vehicle(db)
    found = await loaders.make_model_set(db.fetch, "acme", v["make"], v["model"])
    return sorted(((vin, int(year)) for vin, year in found.items()), key=lambda p: (p[1], p[0]))


def _part_number(db: LoadedDb) -> str:
    return str(records(db, "parts")[-1]["part_number"])


def _stock_level(db: LoadedDb) -> float:
    """The third lowest stock of acme: the by-stock query finds three parts or more."""
    return float(sorted(q for (t, _), q in db.data.on_hand().items() if t == "acme")[2])


def _busy_part(db: LoadedDb) -> str:
    return str(next(m["part_number"] for m in records(db, "stock_movements")
                    if m["reason"] == "issue"))


@pytest.mark.parametrize("case", PATTERN_CASES, ids=lambda c: c.name)
async def test_a_pattern_with_fetch_loads_then_hits(
    case: PatternCase, auto_db: LoadedDb, auto_cache: Cache
) -> None:
    expected = await case.expected(auto_db)
    assert expected not in (None, [])
    # Without fetch, nothing is cached yet: the pattern answers nothing.
    assert await case.call(auto_cache, auto_db, None) in (None, [])
    fetch = CountingFetch(auto_db.fetch)
    assert await case.call(auto_cache, auto_db, fetch) == expected
    assert fetch.calls > 0
    loaded = fetch.calls
    assert await case.call(auto_cache, auto_db, fetch) == expected
    assert fetch.calls == loaded, "the second call reached PostgreSQL"
    # What the read-through cached answers the cache-only pattern too.
    assert await case.call(auto_cache, auto_db, None) == expected


async def test_patterns_with_fetch_answer_none_for_missing_rows_and_cache_it(
    auto_db: LoadedDb, auto_cache: Cache
) -> None:
    fetch = CountingFetch(auto_db.fetch)
    for _ in range(2):
        assert await patterns.vehicle_history(auto_cache, "acme", vin=UNKNOWN_VIN,
                                              fetch=fetch) is None
        assert await patterns.part(auto_cache, "acme", part_number="NOPE-1", fetch=fetch) is None
        assert await patterns.labor_quote(auto_cache, "acme", service_type="nope", month=1,
                                          fetch=fetch) is None
    # One load each (a history is one query when the vehicle is missing): the second
    # round answered from the cached absences.
    assert fetch.calls == 3
    # An unknown type caches no seasonality.
    assert await auto_cache.get(LABOR_SEASONALITY.key("acme", service_type="nope")) is None


# --------------------------------------------------------------------------- warmers


async def test_warmed_entries_equal_postgresql(auto_db: LoadedDb, auto_cache: Cache) -> None:
    cache, fetch = auto_cache, auto_db.fetch
    outcome = await warm_tenant(cache, fetch, "acme")
    assert outcome.filled > 0
    assert (outcome.rejected, outcome.busy, outcome.absent) == (0, 0, 0)
    parts = await loaders.all_parts(fetch, "acme")
    for p in parts:
        assert await cache.hash(PART.key("acme", part_number=p.part_number)).get() == p
    by_stock, margin = loaders.stock_scores(parts)
    assert dict(await cache.zset(PARTS_BY_STOCK.key("acme")).range_by_score()) == by_stock
    assert dict(await cache.zset(PARTS_REORDER_MARGIN.key("acme")).range_by_score()) == margin
    for (make, model), vins in (await loaders.make_model_sets(
            fetch, "acme", await loaders.make_model_pairs(fetch, "acme"))).items():
        key = MAKE_MODEL.key("acme", make=make, model=model)
        assert dict(await cache.zset(key).range_by_score()) == vins
    for code in CODES:
        assert await cache.get(SERVICE_TYPE.key("acme", code=code)) == \
            await loaders.service_type(fetch, "acme", code)
        assert await cache.get(LABOR_SEASONALITY.key("acme", service_type=code)) == \
            await loaders.labor_seasonality(fetch, "acme", code)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    vins = await loaders.recent_vins(fetch, "acme", since, 500)
    assert vins
    for history in await loaders.vehicle_histories(fetch, "acme", vins):
        assert await cache.get(vehicle_history_key("acme", history.vehicle.vin)) == history
    # Warming again finds everything cached and writes nothing.
    again = await warm_tenant(cache, fetch, "acme")
    assert (again.filled, again.cached) == (0, outcome.filled)
    # The other tenant was not warmed.
    assert await cache.zset(PARTS_BY_STOCK.key("globex")).card() == 0


@attrs.frozen
class RaceCase:
    """A warmer, one key it fills, the change of that key's row, and its read-through."""

    name: str
    warmer: Callable[[], Any]
    key: Callable[[LoadedDb], CacheKey[Any]]
    change: str
    read: Callable[[Cache, LoadedDb], Awaitable[Any]]
    fresh: Callable[[LoadedDb], Awaitable[Any]]


def _part_key(db: LoadedDb) -> CacheKey[Any]:
    return PART.key("acme", part_number=records(db, "parts")[0]["part_number"])


def _model_key(db: LoadedDb) -> CacheKey[Any]:
    v = first_vehicle(db)
    return MAKE_MODEL.key("acme", make=v["make"], model=v["model"])


RACES = [
    RaceCase(
        "part hash", parts_warmer, _part_key,
        "UPDATE auto.parts SET lead_time_days = lead_time_days + 9, description = 'moved' "
        "WHERE tenant_id = 'acme' AND part_number = $1",
        lambda c, db: c.hash(_part_key(db)).get_or_load(
            lambda: loaders.part(db.fetch, "acme", _part_key(db).params["part_number"])),
        lambda db: loaders.part(db.fetch, "acme", _part_key(db).params["part_number"]),
    ),
    RaceCase(
        "service type value", labor_warmer,
        lambda db: SERVICE_TYPE.key("acme", code="oil_change"),
        "UPDATE auto.service_types SET labor_rate = labor_rate + 7 "
        "WHERE tenant_id = 'acme' AND code = $1",
        lambda c, db: c.get_or_load(SERVICE_TYPE.key("acme", code="oil_change"),
                                    lambda: loaders.service_type(db.fetch, "acme", "oil_change")),
        lambda db: loaders.service_type(db.fetch, "acme", "oil_change"),
    ),
    RaceCase(
        "make/model set", vehicles_warmer, _model_key,
        "UPDATE auto.vehicles SET model_year = 1999 WHERE tenant_id = 'acme' AND vin = $1",
        lambda c, db: _read_model(c, db),
        lambda db: loaders.make_model_set(db.fetch, "acme", first_vehicle(db)["make"],
                                          first_vehicle(db)["model"]),
    ),
]


async def _read_model(cache: Cache, db: LoadedDb) -> dict[str, float]:
    v = first_vehicle(db)
    found = await cache.zset(_model_key(db)).get_or_load(
        lambda: loaders.make_model_set(db.fetch, "acme", v["make"], v["model"]))
    return dict(found)


def _row_id(case: RaceCase, db: LoadedDb) -> Any:
    key = case.key(db)
    return key.params.get("part_number") or key.params.get("code") or first_vehicle(db)["vin"]


@pytest.mark.parametrize("case", RACES, ids=lambda c: c.name)
async def test_a_warm_refuses_a_row_changed_after_its_lease(
    case: RaceCase, auto_db: LoadedDb, auto_cache: Cache
) -> None:
    cache, key = auto_cache, case.key(auto_db)
    old = await case.fresh(auto_db)

    def racing(batch: WarmBatch) -> WarmBatch:
        if key not in batch.keys:
            return batch

        async def load(leased: Sequence[CacheKey[Any]]) -> Mapping[CacheKey[Any], Any]:
            entries = await batch.load(leased)  # the rows as they were...
            assert entries[key] == old
            # ...then the row changes and its rule invalidates the key, before the write.
            await auto_db.conn.execute(case.change, _row_id(case, auto_db))
            await cache.invalidate(key)
            return entries

        return WarmBatch(batch.keys, load, description=batch.description)

    outcome = WarmOutcome()
    context = WarmContext(cache=cache, tenant="acme", fetch=auto_db.fetch)
    async for batch in case.warmer().produce(context):
        outcome += await warm(cache, racing(batch))
    assert outcome.rejected >= 1
    assert outcome.filled > 0  # the other keys of the batch were written
    new = await case.fresh(auto_db)
    assert new != old
    assert await case.read(cache, auto_db) == new
