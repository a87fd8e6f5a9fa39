"""Tags, dependencies and cascades against real Redis: every test body runs on a single
server and on a 3-master Cluster (the ``thorbis_redis_url`` fixture), so every script is
proved legal there (all keys it touches share the tenant's slot)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import attrs
import pytest
from core_testing import run_cli
from thorbis_home_services.models import CustomerSegment
from thorbis_home_services.schemas import CUSTOMER_LIST
from thorbis_home_services.writers import store_customer_list

from thorbis_cache import Cache, CacheApp, KeyRing, KeySchema, SchemaRegistry
from thorbis_cache.cache.keys import SchemaKind
from thorbis_cache.errors import InvalidKeyError
from thorbis_cache.invalidation import CacheTagInvalidator, InvalidationLimits
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.testing.clients import master_clients


@attrs.frozen
class Row:
    id: int
    name: str


LIST: KeySchema[str] = KeySchema("t.list", str, params={"id": int}, ttl=300, ttl_jitter=0.1,
                 tags=("t.lists", "t.reports"))
LONG: KeySchema[str] = KeySchema("t.long", str, params={"id": int}, ttl=3000, tags=("t.lists",))
OTHER: KeySchema[str] = KeySchema("t.other", str, params={"id": int}, ttl=300, tags=("t.others",))
ROW: KeySchema[Row] = KeySchema("t.row", Row, params={"id": int}, ttl=600, kind=SchemaKind.HASH,
                tags=("t.rows",))
BOARD: KeySchema[int] = KeySchema("t.board", int, params={"id": int}, ttl=900, kind=SchemaKind.ZSET,
                  tags=("t.lists",))
PLAIN: KeySchema[str] = KeySchema("t.plain", str, params={"id": int}, ttl=300)


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (LIST, LONG, OTHER, ROW, BOARD, PLAIN):
        reg.register(schema, owner="tests")
    return reg


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    async with Cache.from_url(thorbis_redis_url, registry()) as c:
        yield c


def small_batches(url: str) -> Cache:
    limits = InvalidationLimits(tag_batch=100, cascade_keys=64, cascade_edges=500)
    return Cache.from_url(url, registry(), invalidation_limits=limits)


def server_stat(url: str, what: str) -> int:
    """Total keys (``"keys"``) or script calls (``"scripts"``) over every master."""
    total = 0
    for node in master_clients(url):
        if what == "keys":
            total += int(node.dbsize())
        else:
            stats = node.info("commandstats")
            total += sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0))
                         for c in ("evalsha", "eval"))
        node.close()
    return total


def leftover_keys(url: str) -> list[bytes]:
    """Every key on every master but the replication markers of invalidations (``WAIT``
    after an invalidation where replicas exist: ``~sync:``, expiring after a second)."""
    found: list[bytes] = []
    for node in master_clients(url):
        found += [k for k in node.scan_iter(count=1000) if b":~sync:" not in k]
        node.close()
    return found


async def members(cache: Cache, tenant: str, tag: str) -> set[str]:
    raw = await cache.store.command("SMEMBERS", cache.tag_key(tenant, tag))
    return {m.decode() for m in raw}


async def pttl(cache: Cache, key: str) -> int:
    return int(await cache.store.command("PTTL", key))


async def due_in(cache: Cache, tenant: str, name: str) -> int:
    """Milliseconds until the tenant index entry of ``name`` is due (server clock)."""
    score = await cache.store.command("ZSCORE", cache.tags.meta.index(tenant), name)
    assert score is not None, f"{name} has no index entry"
    seconds, micros = await cache.store.command("TIME")
    return int(float(score)) - (int(seconds) * 1000 + int(micros) // 1000)


# --------------------------------------------------------------------------- recording


async def test_every_write_records_its_tags_and_tag_sets_outlive_their_members(
    cache: Cache,
) -> None:
    listed = LIST.key("acme", id=1)
    filled = LIST.key("acme", id=2)
    longer = LONG.key("acme", id=1)
    row = ROW.key("acme", id=1)
    board = BOARD.key("acme", id=1)
    await cache.set(listed, "set")

    async def load() -> str:
        return "filled"

    assert await cache.get_or_load(filled, load) == "filled"
    await cache.set(longer, "long")
    await cache.hash(row).replace(Row(1, "Ada"))
    await cache.zset(board).add({7: 1.0}, replace=True)

    lists = {cache.redis_key(k) for k in (listed, filled, longer, board)}
    assert await members(cache, "acme", "t.lists") == lists
    assert await members(cache, "acme", "t.reports") == {cache.redis_key(listed),
                                                         cache.redis_key(filled)}
    assert await members(cache, "acme", "t.rows") == {cache.redis_key(row)}
    # A tag set has no TTL (so no supported eviction policy can drop it); its entry in
    # the tenant index is due no sooner than its longest-lived member expires.
    for tag, keys in (("t.lists", (listed, filled, longer, board)), ("t.rows", (row,))):
        assert await pttl(cache, cache.tag_key("acme", tag)) == -1
        due = await due_in(cache, "acme", cache.tag_key("acme", tag))
        for key in keys:
            member_ttl = await pttl(cache, cache.redis_key(key))
            assert 0 < member_ttl <= due, (tag, key.body)
    # A longer TTL on a partial update is carried to the index entry too.
    await cache.hash(row).update({"name": "Ada L."}, ttl=5000)
    assert await due_in(cache, "acme", cache.tag_key("acme", "t.rows")) >= await pttl(
        cache, cache.redis_key(row)) > 600_000


async def test_a_schema_without_tags_creates_no_tag_set(
    cache: Cache, thorbis_redis_url: str
) -> None:
    await cache.set(PLAIN.key("acme", id=1), "plain")

    async def load() -> str:
        return "filled"

    await cache.get_or_load(PLAIN.key("acme", id=2), load)
    assert server_stat(thorbis_redis_url, "keys") == 2  # the two values, nothing else


# --------------------------------------------------------------------------- by tag


async def test_invalidate_tags_deletes_every_member_in_batches_and_nothing_else(
    thorbis_redis_url: str,
) -> None:
    async with small_batches(thorbis_redis_url) as cache:
        for i in range(1000):
            await cache.set(LIST.key("acme", id=i), f"v{i}")
        for i in range(5):
            await cache.set(LIST.key("globex", id=i), "other tenant")
            await cache.set(OTHER.key("acme", id=i), "other tag")
        before = server_stat(thorbis_redis_url, "scripts")
        assert await cache.invalidate_tags("acme", ["t.lists"]) == 1000
        # 1000 members at 100 per call: at least ten bounded calls.
        assert server_stat(thorbis_redis_url, "scripts") - before >= 10
        assert not any(await cache.get_many([LIST.key("acme", id=i) for i in range(1000)]))
        assert await cache.get_many([LIST.key("globex", id=i) for i in range(5)]) == [
            "other tenant"] * 5
        assert await cache.get_many([OTHER.key("acme", id=i) for i in range(5)]) == [
            "other tag"] * 5
        assert await members(cache, "acme", "t.lists") == set()
        assert len(await members(cache, "globex", "t.lists")) == 5
        # The keys were reached through t.lists; t.reports still names them, harmlessly.
        assert await cache.invalidate_tags("acme", ["t.reports"]) == 0
        assert await cache.invalidate_tags("acme", ["t.never_written"]) == 0


async def test_invalidate_tags_refuses_malformed_names(cache: Cache) -> None:
    with pytest.raises(InvalidKeyError, match=r"t\.lists\}"):
        await cache.invalidate_tags("acme", ["t.lists}"])
    with pytest.raises(ValueError, match="tenant"):
        await cache.invalidate_tags("{acme}", ["t.lists"])


async def test_value_loaded_before_a_tag_invalidation_is_never_written_after_it(
    cache: Cache, thorbis_redis_url: str
) -> None:
    key = LIST.key("acme", id=9)
    read_done = asyncio.Event()
    release = asyncio.Event()

    async def slow_stale_loader() -> str:
        read_done.set()
        await release.wait()
        return "old"

    # The very first fill of the key: only the lease grant has recorded it in the tag.
    filler = asyncio.create_task(cache.get_or_load(key, slow_stale_loader))
    await read_done.wait()
    async with Cache.from_url(thorbis_redis_url, registry()) as other:
        assert await other.invalidate_tags("acme", ["t.reports"]) == 0  # nothing written yet
    release.set()
    assert await filler == "old"  # the caller gets what it loaded...
    assert await cache.get(key) is None  # ...but it was not written
    assert cache.metrics.value("fills_rejected", schema="t.list") == 1

    async def fresh() -> str:
        return "new"

    assert await cache.get_or_load(key, fresh) == "new"
    assert await cache.get(key) == "new"


async def test_a_tag_refilled_while_it_is_drained_still_terminates(
    thorbis_redis_url: str,
) -> None:
    async with small_batches(thorbis_redis_url) as cache:
        keys = [LIST.key("acme", id=i) for i in range(500)]
        for key in keys:
            await cache.set(key, "old")
        stop = asyncio.Event()

        async def refill() -> None:
            # Writers that keep putting fresh values back under the tag meanwhile.
            while not stop.is_set():
                for key in keys[:50]:
                    await cache.set(key, "new")

        writer = asyncio.create_task(refill())
        try:
            await cache.invalidate_tags("acme", ["t.lists"])
        finally:
            stop.set()
            await writer
        # Every value left was written after the invalidation began: none is "old".
        assert "old" not in await cache.get_many(keys)


async def test_what_a_dead_invalidation_left_is_drained_by_the_next(cache: Cache) -> None:
    old = [LIST.key("acme", id=i) for i in range(20)]
    for key in old:
        await cache.set(key, "old")
    # An invalidation that died right after moving the tag set to its drain set...
    drain = cache.tag_key("acme", "t.lists").replace(":~tag:", ":~drain:")
    await cache.store.command("RENAME", cache.tag_key("acme", "t.lists"), drain)
    newer = LIST.key("acme", id=100)
    await cache.set(newer, "written since")
    # ...leaves nothing stale behind: the next one drains both sets.
    assert await cache.invalidate_tags("acme", ["t.lists"]) == 21
    assert not any(await cache.get_many([*old, newer]))
    assert not await cache.store.command("EXISTS", drain)


# --------------------------------------------------------------------------- cascades


async def test_cascade_follows_a_chain_and_plain_invalidate_does_not(
    cache: Cache, thorbis_redis_url: str
) -> None:
    a, b, c = (PLAIN.key("acme", id=i) for i in (1, 2, 3))
    for key in (a, b, c):
        await cache.set(key, key.body)
    assert await cache.depend(b, on=a)
    assert not await cache.depend(b, on=a)  # the same edge twice is one edge
    await cache.depend(c, on=b)
    # No TTL on the edge set; its index entry is due no sooner than the dependent expires.
    assert await pttl(cache, cache.tags.deps_key(a.body)) == -1
    assert await due_in(cache, "acme", cache.tags.deps_key(a.body)) >= await pttl(
        cache, cache.redis_key(b))
    assert await cache.invalidate(a) == 1
    assert await cache.get_many([a, b, c]) == [None, b.body, c.body]

    await cache.set(a, a.body)
    assert await cache.invalidate(a, cascade=True) == 3
    assert await cache.get_many([a, b, c]) == [None, None, None]
    # Edges, frontier, visited set, their index entries and the tenant's registration
    # are gone too: nothing is left behind.
    assert leftover_keys(thorbis_redis_url) == []


async def test_cascade_terminates_on_a_cycle(cache: Cache) -> None:
    a, b = PLAIN.key("acme", id=1), PLAIN.key("acme", id=2)
    for key in (a, b):
        await cache.set(key, "v")
    await cache.depend(b, on=a)
    await cache.depend(a, on=b)
    await cache.depend(a, on=a)
    assert await cache.invalidate(b, cascade=True) == 2
    assert await cache.get_many([a, b]) == [None, None]


async def test_cascade_of_thousands_of_dependents_runs_in_bounded_calls(
    thorbis_redis_url: str,
) -> None:
    async with small_batches(thorbis_redis_url) as cache:
        root = LIST.key("acme", id=0)
        await cache.set(root, "root")
        dependents = [PLAIN.key("acme", id=i) for i in range(3000)]
        for key in dependents:
            await cache.set(key, "dep")
            await cache.depend(key, on=root)
        # A second level under one dependent, and an edge back to the root.
        leaf = PLAIN.key("acme", id=5000)
        await cache.set(leaf, "leaf")
        await cache.depend(leaf, on=dependents[0])
        await cache.depend(root, on=dependents[1])
        bystander = PLAIN.key("acme", id=6000)
        await cache.set(bystander, "untouched")
        before = server_stat(thorbis_redis_url, "scripts")
        assert await cache.invalidate(root, cascade=True) == 3002
        # At most 500 edges and 64 keys per call: many calls, none unbounded.
        assert server_stat(thorbis_redis_url, "scripts") - before >= 3000 // 500
        assert not any(await cache.get_many([*dependents, leaf, root]))
        assert await cache.get(bystander) == "untouched"


async def test_cascading_tag_invalidation_reaches_dependents(cache: Cache) -> None:
    listed = LIST.key("acme", id=1)
    derived = PLAIN.key("acme", id=1)
    await cache.set(listed, "list")
    await cache.set(derived, "derived")
    await cache.depend(derived, on=listed)
    assert await cache.invalidate_tags("acme", ["t.lists"], cascade=True) == 2
    assert await cache.get_many([listed, derived]) == [None, None]


async def test_dependencies_across_tenants_are_refused(cache: Cache) -> None:
    mine, theirs = PLAIN.key("acme", id=1), PLAIN.key("globex", id=1)
    with pytest.raises(InvalidKeyError) as info:
        await cache.depend(theirs, on=mine)
    assert cache.redis_key(mine) in str(info.value)
    assert cache.redis_key(theirs) in str(info.value)


# --------------------------------------------------------------------------- the worker


CUSTOMER_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
VALUES ($1, $2, 'Ada', 'Lovelace', 'ada@example.com', '555-0100', 'residential', 'active',
        'current', -97.7, 30.2)
"""


async def test_worker_drops_tagged_lists_on_a_committed_significant_change(
    thorbis_pg_dsn: str, thorbis_redis_url: str
) -> None:
    await asyncio.to_thread(run_cli, "db", "init", "--dsn", thorbis_pg_dsn,
                            "--plugin", "home_services")
    app = await CacheApp(thorbis_redis_url, keyring=KeyRing.generate()).start(["home_services"])
    conn = await asyncpg.connect(thorbis_pg_dsn)
    try:
        await conn.execute(CUSTOMER_SQL, "acme", 1)
        await conn.execute(CUSTOMER_SQL, "globex", 1)
        worker = OutboxWorker.from_app(app, thorbis_pg_dsn)
        assert isinstance(worker.invalidate_tags, CacheTagInvalidator)
        async with worker:
            await worker.drain()
            mine = CUSTOMER_LIST.key("acme", segment=CustomerSegment.ACTIVE)
            theirs = CUSTOMER_LIST.key("globex", segment=CustomerSegment.ACTIVE)
            for tenant in ("acme", "globex"):
                await store_customer_list(app.cache, tenant, CustomerSegment.ACTIVE, {1: 10.0})

            await conn.execute("UPDATE hs.customers SET phone = '555-0199' "
                               "WHERE tenant_id = 'acme' AND id = 1")
            await worker.run_once()  # an insignificant column: the lists stay
            assert await app.cache.zset(mine).card() == 1

            await conn.execute("UPDATE hs.customers SET account_status = 'vip' "
                               "WHERE tenant_id = 'acme' AND id = 1")
            result = await worker.run_once()
        assert ("acme", "hs.customer_lists") in result.tags
        assert await app.cache.zset(mine).card() == 0
        assert await app.cache.zset(theirs).card() == 1  # another tenant's list stays
    finally:
        await conn.close()
        await app.aclose()
