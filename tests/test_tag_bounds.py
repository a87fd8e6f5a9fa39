"""Tag sets stay bounded: a tag written constantly keeps few dead members (expired
entries, fills refused or failed), pruned by bounded work on every write that records a
member; a tag (or dependency set) no longer written is pruned by the tenant index sweep
once its entries expired, in bounded steps -- on a single Redis and on a Cluster.

The sets carry no TTL (so no supported eviction policy can drop one, see
``tests/test_eviction.py``): the sweep is what bounds an idle one.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from collections.abc import AsyncIterator

import pytest

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.cache.keys import SchemaKind
from thorbis_cache.cache.meta_sweep import SLOTS, MetaSweep, SweepReport, slot_tag
from thorbis_cache.invalidation import InvalidationLimits

ENTRY: KeySchema[str] = KeySchema("tb.entry", str, params={"id": int}, ttl=3600,
                                  tags=("tb.hot",))
BOARD: KeySchema[int] = KeySchema("tb.board", int, params={"id": int}, ttl=3600,
                                  kind=SchemaKind.ZSET, tags=("tb.hot",))
#: Entries that expire 0.3 s after they are written, under a tag no one writes again.
BRIEF: KeySchema[str] = KeySchema("tb.brief", str, params={"id": int}, ttl=0.3,
                                  tags=("tb.idle",))
LASTING: KeySchema[str] = KeySchema("tb.lasting", str, params={"id": int}, ttl=3600,
                                    tags=("tb.idle",))
WRITES = 2000
LIVE = 10


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    registry = SchemaRegistry()
    for schema in (ENTRY, BOARD, BRIEF, LASTING):
        registry.register(schema, owner="tests")
    # Short work_ttl and one key per cascade step: a cascade can be left half done.
    limits = InvalidationLimits(cascade_keys=1, work_ttl=0.1)
    async with Cache.from_url(thorbis_redis_url, registry, invalidation_limits=limits) as c:
        yield c


async def _card(cache: Cache) -> int:
    return int(await cache.store.command("SCARD", cache.tag_key("acme", "tb.hot")))


async def test_a_tag_written_constantly_stays_bounded(cache: Cache) -> None:
    """2,000 writes under one tag, each entry gone (as if expired) ten writes later:
    without pruning the tag set would hold 2,000 members; it holds a few times the ten
    live ones, and still invalidates every live one."""
    peak = 0
    for i in range(WRITES):
        await cache.set(ENTRY.key("acme", id=i), f"v{i}")
        if i >= LIVE:  # the entry written LIVE writes ago expires: its key goes, not its tag
            await cache.store.delete([cache.redis_key(ENTRY.key("acme", id=i - LIVE))])
        peak = max(peak, await _card(cache))
    print(f"\npeak tag set: {peak} members for {LIVE} live entries over {WRITES} writes")
    assert peak <= 6 * LIVE
    live = [ENTRY.key("acme", id=i) for i in range(WRITES - LIVE, WRITES)]
    assert await cache.invalidate_tags("acme", ["tb.hot"]) == LIVE
    assert await cache.get_many(live) == [None] * LIVE


async def test_failed_and_refused_fills_leave_no_member_behind(cache: Cache) -> None:
    async def fails() -> str:
        raise ConnectionError("database down")

    for i in range(300):
        with pytest.raises(ConnectionError):
            await cache.get_or_load(ENTRY.key("acme", id=i), fails)
        await cache.zset(BOARD.key("acme", id=i)).get_or_load(_board)
        await cache.delete(BOARD.key("acme", id=i))  # a board dropped by its key
    assert await _card(cache) <= 6 * 3


async def test_a_member_being_filled_is_never_pruned(cache: Cache) -> None:
    """A lease's member must stay in its tag set: a tag invalidation during the load has
    to find it and revoke the fill."""
    key = ENTRY.key("acme", id=1)
    await cache.store.run(cache._scripts.lease_acquire,
                          [cache.redis_key(key), cache.lease_key(key), *cache.tag_keys(key)],
                          ["token", 60_000, "miss"])
    for i in range(2, 400):  # many writes sample the set; the leased member has no key
        await cache.set(ENTRY.key("acme", id=i), "v")
        await cache.store.delete([cache.redis_key(ENTRY.key("acme", id=i))])
    members = await cache.store.command("SMEMBERS", cache.tag_key("acme", "tb.hot"))
    assert cache.redis_key(key).encode() in members


async def _board() -> dict[int, float]:
    return {1: 1.0}


# --------------------------------------------------------------------------- the sweep


async def sweep_pass(cache: Cache, **options: int) -> tuple[SweepReport, int]:
    """One whole pass of a new sweeper: the summed report and how many steps it took."""
    sweep = MetaSweep.for_cache(cache, min_delay=0.05, **options)
    steps, calls, members, entries, tenants = 0, 0, 0, 0, 0
    while True:
        report = await sweep.sweep_once()
        steps += 1
        calls += report.calls
        members += report.members_removed
        entries += report.entries_removed
        tenants += report.tenants_removed
        if report.pass_complete:
            return SweepReport(calls, members, entries, tenants, True), steps


async def exists(cache: Cache, *names: str) -> list[bool]:
    return [bool(await cache.store.command("EXISTS", name)) for name in names]


async def test_an_idle_tag_set_is_swept_once_its_entries_expired(cache: Cache) -> None:
    """100 entries under a tag nobody writes again, 20 of them with a dependent: once
    they expired, one pass removes the sets, their index entries and the tenant's
    registration -- nothing is left that no write would ever touch again."""
    tag = cache.tag_key("acme", "tb.idle")
    brief = [BRIEF.key("acme", id=i) for i in range(100)]
    for key in brief:
        await cache.set(key, "v")
    for i, key in enumerate(brief[:20]):  # dependents never written: dead from the start
        await cache.depend(BRIEF.key("acme", id=1000 + i), on=key)
    deps = [cache.tags.deps_key(key.body) for key in brief[:20]]
    meta = [cache.tags.meta.index("acme"), cache.tags.meta.registry("acme")]
    assert await exists(cache, tag, *deps, *meta) == [True] * 23
    assert await cache.store.command("PTTL", tag) == -1  # no TTL: only the sweep bounds it

    before, _ = await sweep_pass(cache)
    assert before.members_removed == 0  # nothing is due yet: nothing is touched
    await asyncio.sleep(0.5)
    report, steps = await sweep_pass(cache)

    assert report.members_removed == 100 + 20
    assert report.entries_removed == 1 + 20
    assert report.tenants_removed == 1
    assert await exists(cache, tag, *deps, *meta) == [False] * 23
    print(f"\nidle tag of 100 + 20 edges swept in {report.calls} calls over {steps} step(s)")


async def test_a_set_due_with_live_members_keeps_them_until_they_expire(
    cache: Cache,
) -> None:
    """A set is due once everything recorded in it has expired -- unless a member lives
    longer than recorded (data without a TTL, a set written by an older version): the
    sweep then keeps the live members and comes back when the longest-lived expires."""
    tag = cache.tag_key("acme", "tb.idle")
    for i in range(50):
        await cache.set(BRIEF.key("acme", id=i), "brief")
    lasting = [LASTING.key("acme", id=i) for i in range(5)]
    for key in lasting:
        await cache.set(key, "lasting")
    index = cache.tags.meta.index("acme")
    await asyncio.sleep(0.5)
    quiet, _ = await sweep_pass(cache)
    assert quiet.members_removed == 0  # not due: the lasting entries were recorded
    recorded = int(await cache.store.command("SCARD", tag))  # writes pruned a few
    await cache.store.command("ZADD", index, "XX", 0, tag)  # due now, as if older
    report, _ = await sweep_pass(cache)
    assert report.members_removed == recorded - 5
    left = await cache.store.command("SMEMBERS", tag)
    assert {m.decode() for m in left} == {cache.redis_key(k) for k in lasting}
    due = float(await cache.store.command("ZSCORE", index, tag))
    seconds, micros = await cache.store.command("TIME")
    now = int(seconds) * 1000 + int(micros) // 1000
    assert due - now >= await cache.store.command("PTTL", cache.redis_key(lasting[0])) - 50
    again, _ = await sweep_pass(cache)
    assert (again.members_removed, again.entries_removed) == (0, 0)
    assert await cache.invalidate_tags("acme", ["tb.idle"]) == 5


async def test_each_sweep_step_is_bounded(cache: Cache) -> None:
    """3,000 dead members (edges to dependents never written: no write prunes them),
    swept 100 at a time, one Redis call per step."""
    root = BRIEF.key("acme", id=0)
    for i in range(1, 3001):
        await cache.depend(BRIEF.key("acme", id=i), on=root)
    deps = cache.tags.deps_key(root.body)
    assert int(await cache.store.command("SCARD", deps)) == 3000
    await asyncio.sleep(0.4)
    sweep = MetaSweep.for_cache(cache, batch=100, budget=1, min_delay=0.05)
    removed: list[int] = []
    while True:
        report = await sweep.sweep_once()
        assert report.calls <= 1  # the step that ends the pass makes none
        removed.append(report.members_removed)
        if report.pass_complete:
            break
    assert sum(removed) == 3000
    # SSCAN's COUNT is a hint: a step removes about a batch, never the whole set.
    assert max(removed) <= 300
    assert sum(1 for r in removed if r) >= 10
    assert not await cache.store.command("EXISTS", deps)


async def test_the_work_keys_of_a_cascade_whose_caller_died_are_swept(cache: Cache) -> None:
    seeds = [cache.redis_key(ENTRY.key("acme", id=i)) for i in range(3)]
    for i in range(3):
        await cache.set(ENTRY.key("acme", id=i), "v")
    tags = cache.tags
    frontier = f"{cache.settings.prefix}:~cascade:{{acme}}:dead"
    meta = [tags.meta.index("acme"), tags.meta.registry("acme")]
    # One step of a cascade (one key per step), then its caller is gone.
    left, deleted = await cache.store.run(
        tags._cascade, [frontier, frontier + ":v", *meta],
        [1, 512, cache.settings.prefix, 100, "acme", *seeds])
    assert (left, deleted) == (2, 1)
    assert await exists(cache, frontier, frontier + ":v") == [True, True]
    await cache.invalidate_tags("acme", ["tb.hot"])  # the tag set is gone: only work keys
    await asyncio.sleep(0.2)
    report, _ = await sweep_pass(cache)
    assert report.entries_removed >= 2
    assert await exists(cache, frontier, frontier + ":v", *meta) == [False] * 4


async def test_sweep_forever_sweeps_until_cancelled(cache: Cache) -> None:
    for i in range(20):
        await cache.set(BRIEF.key("acme", id=i), "v")
    await asyncio.sleep(0.4)
    sweep = MetaSweep.for_cache(cache, min_delay=0.05)
    task = asyncio.create_task(sweep.sweep_forever(interval=0.05))
    try:
        for _ in range(100):
            if not await cache.store.command("EXISTS", cache.tags.meta.index("acme")):
                break
            await asyncio.sleep(0.05)
        assert not await cache.store.command("EXISTS", cache.tag_key("acme", "tb.idle"))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()


async def test_scripts_register_tenants_where_the_sweep_looks(cache: Cache) -> None:
    """record_tags derives the slot registry in Lua; the sweep names it in Python."""
    tenants = [f"t{i}-{'x' * (i % 7)}" for i in range(40)]
    for tenant in tenants:
        await cache.set(ENTRY.key(tenant, id=1), "v")
    for tenant in tenants:
        registry = cache.tags.meta.registry(tenant)
        assert await cache.store.command("ZSCORE", registry, tenant) is not None, tenant


def test_every_slot_has_a_registry_tag_in_that_slot() -> None:
    for slot in range(SLOTS):
        tag = slot_tag(slot)
        assert binascii.crc_hqx(tag.encode(), 0) == slot
        assert set(tag) <= set("@ABCDEFGHIJKLMNO")
