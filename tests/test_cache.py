"""The cache API against real Redis: every test body runs on a single server and on a
3-master Cluster (the ``thorbis_redis_url`` fixture is parametrized over topologies)."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import redis

import thorbis_cache.cache.fill
from thorbis_cache import Cache, CacheSettings, Compression, KeyRing, KeySchema, SchemaRegistry
from thorbis_cache.cache.codec import CodecSettings
from thorbis_cache.cache.keys import SchemaKind
from thorbis_cache.errors import (
    ConfigurationError,
    InvalidParameterError,
    RedisUnavailableError,
    UnknownSchemaError,
    ValueTooLargeError,
    ValueTypeError,
    WrongSchemaKindError,
)
from thorbis_cache.testing.clients import master_clients
from thorbis_cache.testing.servers import RedisServer


class Status(enum.Enum):
    ACTIVE = "active"
    VIP = "vip"


@attrs.frozen
class Customer:
    id: int
    name: str
    email: str
    status: Status
    lifetime_value: float
    last_service: dt.date | None
    notes: list[str] = attrs.field(factory=list)


CUSTOMER = KeySchema("hs.customer", Customer, params={"customer_id": int}, ttl=300,
                     sensitive=True, ttl_jitter=0.1)
LABEL = KeySchema("hs.label", str, params={"name": str}, ttl=300)
BIG = KeySchema("hs.report", str, params={"id": int}, ttl=300, sensitive=True,
                compression=Compression.AUTO)
HOT = KeySchema("hs.hot", int, params={"id": int}, ttl=1, early_recompute=1.0)
ENTITY = KeySchema("hs.customer_hash", Customer, params={"customer_id": int},
                   kind=SchemaKind.HASH, sensitive=True)
UNREGISTERED = KeySchema("hs.unregistered", str)
DOC = KeySchema("hs.doc", dict[str, Any], params={"id": int}, ttl=300, sensitive=True)


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (CUSTOMER, LABEL, BIG, HOT, ENTITY, DOC):
        reg.register(schema, owner="tests")
    return reg


RING = KeyRing.generate()


def ann(n: int = 1, name: str = "Ann") -> Customer:
    return Customer(n, name, f"{name.lower()}@example.com", Status.VIP, 1234.5,
                    dt.date(2024, 3, 1), ["gate code 42"])


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=RING) as c:
        yield c


def command_calls(url: str, command: str) -> int:
    total = 0
    for node in master_clients(url):
        stats = node.info("commandstats")
        total += int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
        node.close()
    return total


def counting(value: Any, delay: float = 0.0) -> tuple[Callable[[], Awaitable[Any]], list[int]]:
    calls = [0]

    async def loader() -> Any:
        calls[0] += 1
        if delay:
            await asyncio.sleep(delay)
        return value

    return loader, calls


# --------------------------------------------------------------------------- basics


async def test_set_get_delete_round_trip(cache: Cache) -> None:
    key = CUSTOMER.key("acme", customer_id=1)
    assert await cache.get(key) is None
    await cache.set(key, ann())
    assert await cache.get(key) == ann()
    assert await cache.delete(key) == 1
    assert await cache.get(key) is None
    assert cache.metrics.value("hits", schema="hs.customer") == 1
    assert cache.metrics.value("misses", schema="hs.customer") == 2


async def test_values_are_encrypted_at_rest_and_ttl_is_jittered(
    cache: Cache, thorbis_redis_url: str
) -> None:
    key = CUSTOMER.key("acme", customer_id=7)
    await cache.set(key, ann(7, "Zebediah"))
    raw = await cache.store.get(cache.redis_key(key))
    assert raw is not None
    assert b"Zebediah" not in raw
    assert b"zebediah@example.com" not in raw
    ttl = await cache.store.command("PTTL", cache.redis_key(key))
    assert 0.89 * 300_000 <= ttl <= 1.1 * 300_000


async def test_large_values_are_compressed(cache: Cache) -> None:
    key = BIG.key("acme", id=1)
    text = "quarterly revenue by technician " * 2000
    await cache.set(key, text)
    raw = await cache.store.get(cache.redis_key(key))
    assert raw is not None
    assert len(raw) < len(text) / 10
    assert await cache.get(key) == text


async def test_get_many_keeps_order_and_uses_one_mget_per_slot(
    cache: Cache, thorbis_redis_url: str
) -> None:
    keys = [LABEL.key("acme", name=f"n{i}") for i in range(50)]
    for i, key in enumerate(keys[::2]):
        await cache.set(key, f"v{i * 2}")
    before = command_calls(thorbis_redis_url, "mget")
    got = await cache.get_many(keys)
    assert command_calls(thorbis_redis_url, "mget") - before == 1  # one tenant, one slot
    assert got == [f"v{i}" if i % 2 == 0 else None for i in range(50)]

    tenants = ["acme", "globex", "initech", "umbrella"]
    mixed = [LABEL.key(t, name="x") for t in tenants]
    for t, key in zip(tenants, mixed):
        await cache.set(key, t)
    before = command_calls(thorbis_redis_url, "mget")
    assert await cache.get_many(mixed) == tenants
    slots = {k.tenant for k in mixed}
    calls = command_calls(thorbis_redis_url, "mget") - before
    assert calls == (1 if not cache.store.is_cluster else len(slots))


async def test_errors_name_what_is_wrong(cache: Cache) -> None:
    key = CUSTOMER.key("acme", customer_id=1)
    with pytest.raises(ValueTypeError, match=r"hs\.customer"):
        await cache.set(key, "not a customer")  # type: ignore[arg-type]
    with pytest.raises(UnknownSchemaError, match=r"hs\.unregistered"):
        await cache.get(UNREGISTERED.key("acme"))
    with pytest.raises(WrongSchemaKindError, match=r"hs\.customer_hash"):
        await cache.get(ENTITY.key("acme", customer_id=1))
    with pytest.raises(ConfigurationError, match="KeyRing"):
        Cache(cache.store, registry())


async def test_unreachable_redis_is_a_clear_error_and_get_or_load_degrades() -> None:
    async with Cache.from_url("redis://127.0.0.1:1/0", registry(), keyring=RING) as c:
        key = CUSTOMER.key("acme", customer_id=1)
        with pytest.raises(RedisUnavailableError, match=r"GET on 127\.0\.0\.1:1"):
            await c.get(key)
        loader, calls = counting(ann())
        assert await c.get_or_load(key, loader) == ann()
        assert calls[0] == 1
        assert c.metrics.value("degraded_loads", schema="hs.customer") == 1
    strict = CacheSettings(serve_from_loader_when_unavailable=False)
    async with Cache.from_url("redis://127.0.0.1:1/0", registry(), keyring=RING,
                              settings=strict) as c:
        with pytest.raises(RedisUnavailableError):
            await c.get_or_load(CUSTOMER.key("acme", customer_id=1), counting(ann())[0])


# --------------------------------------------------------------------------- corruption


async def test_tampered_entry_is_a_miss_deleted_and_counted(cache: Cache) -> None:
    key = CUSTOMER.key("acme", customer_id=1)
    await cache.set(key, ann())
    rk = cache.redis_key(key)
    raw = await cache.store.get(rk)
    assert raw is not None
    tampered = bytearray(raw)
    tampered[len(raw) // 2] ^= 0x10
    await cache.store.set(rk, bytes(tampered), 60_000)
    assert await cache.get(key) is None
    assert await cache.store.get(rk) is None
    assert cache.metrics.value("corrupt_entries", schema="hs.customer", reason="auth_failed") == 1
    loader, calls = counting(ann(1, "Reloaded"))
    assert (await cache.get_or_load(key, loader)).name == "Reloaded"
    assert calls[0] == 1


@pytest.mark.parametrize("depth", [100_000, 2_000])
async def test_a_sealed_body_nested_too_deep_is_a_counted_miss(cache: Cache, depth: int) -> None:
    """Found when the project was tried as a user would: a forged but checksum-valid
    body nested 100,000 levels deep under a ``dict[str, Any]`` schema raised
    RecursionError from ``cache.get``. It is an undecodable entry like any other."""
    key = DOC.key("acme", id=1)
    rk = cache.redis_key(key)
    body = b"\x81\xa1a" * depth + b"\xc0"  # {"a": {"a": ... None}}
    sealed = cache._value_runtime(key, "get").codec.seal_body(body, rk.encode(), "acme")
    await cache.store.set(rk, sealed, 60_000)
    assert await cache.get(key) is None
    assert await cache.store.get(rk) is None  # dropped, as any corrupt entry
    assert cache.metrics.value("corrupt_entries", schema="hs.doc", reason="msgpack") == 1
    await cache.store.set(rk, sealed, 60_000)
    assert await cache.get_many([key]) == [None]
    assert await cache.get_or_load(key, lambda: _doc()) == {"a": 1}


async def _doc() -> dict[str, Any]:
    return {"a": 1}


async def test_ciphertext_copied_to_another_tenant_is_a_miss(cache: Cache) -> None:
    a, b = CUSTOMER.key("acme", customer_id=1), CUSTOMER.key("globex", customer_id=1)
    await cache.set(a, ann())
    raw = await cache.store.get(cache.redis_key(a))
    assert raw is not None
    await cache.store.set(cache.redis_key(b), raw, 60_000)
    assert await cache.get(b) is None
    assert await cache.get(a) == ann()


async def test_garbage_in_a_plain_key_is_a_miss(cache: Cache) -> None:
    key = LABEL.key("acme", name="x")
    await cache.store.set(cache.redis_key(key), b"hello world", 60_000)
    assert await cache.get_many([key]) == [None]
    assert cache.metrics.value("corrupt_entries", schema="hs.label", reason="bad_magic") == 1


# --------------------------------------------------------------------------- cache-aside


async def test_single_flight_calls_the_loader_once_per_process(cache: Cache) -> None:
    key = CUSTOMER.key("acme", customer_id=1)
    loader, calls = counting(ann(), delay=0.05)
    results = await asyncio.gather(*(cache.get_or_load(key, loader) for _ in range(50)))
    assert results == [ann()] * 50
    assert calls[0] == 1
    assert await cache.get(key) == ann()
    # Every other caller joined the flight, or (if its GET came late) hit the written value.
    joined = cache.metrics.value("coalesced", schema="hs.customer")
    hits = cache.metrics.value("hits", schema="hs.customer") - 1  # minus the get() above
    assert joined + hits == 49
    assert joined > 0


async def test_lease_makes_other_processes_wait_instead_of_loading(
    thorbis_redis_url: str,
) -> None:
    # Several Cache objects with their own pools stand in for several processes.
    caches = [Cache.from_url(thorbis_redis_url, registry(), keyring=RING) for _ in range(4)]
    try:
        key = CUSTOMER.key("acme", customer_id=3)
        loader, calls = counting(ann(3), delay=0.2)
        results = await asyncio.gather(*(c.get_or_load(key, loader) for c in caches))
        assert results == [ann(3)] * 4
        assert calls[0] == 1
        assert sum(c.metrics.value("lease_waits", schema="hs.customer") for c in caches) == 3
    finally:
        for c in caches:
            await c.aclose()


async def test_value_loaded_before_an_invalidation_is_never_written_after_it(
    cache: Cache, thorbis_redis_url: str
) -> None:
    key = CUSTOMER.key("acme", customer_id=9)
    read_done = asyncio.Event()
    release = asyncio.Event()

    async def slow_stale_loader() -> Customer:
        stale = ann(9, "Old")  # what the database said when we read it
        read_done.set()
        await release.wait()
        return stale

    filler = asyncio.create_task(cache.get_or_load(key, slow_stale_loader))
    await read_done.wait()
    # The row changes and the change is invalidated while the load is in flight.
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=RING) as other:
        await other.delete(key)
    release.set()
    assert (await filler).name == "Old"  # the caller gets what it loaded...
    assert await cache.get(key) is None  # ...but it was not written
    assert cache.metrics.value("fills_rejected", schema="hs.customer") == 1
    loader, _ = counting(ann(9, "New"))
    assert (await cache.get_or_load(key, loader)).name == "New"
    assert (await cache.get(key)).name == "New"  # type: ignore[union-attr]


async def test_a_set_during_a_fill_wins_over_the_fill(cache: Cache) -> None:
    key = CUSTOMER.key("acme", customer_id=10)
    release = asyncio.Event()

    async def slow() -> Customer:
        await release.wait()
        return ann(10, "Old")

    filler = asyncio.create_task(cache.get_or_load(key, slow))
    await asyncio.sleep(0.05)
    await cache.set(key, ann(10, "Written"))
    release.set()
    await filler
    assert (await cache.get(key)).name == "Written"  # type: ignore[union-attr]


async def test_failing_loader_propagates_and_releases_the_lease(cache: Cache) -> None:
    key = CUSTOMER.key("acme", customer_id=11)

    class Boom(Exception):
        pass

    async def broken() -> Customer:
        raise Boom("database said no")

    with pytest.raises(Boom):
        await cache.get_or_load(key, broken)
    assert await cache.store.get(cache.lease_key(key)) is None
    assert cache.metrics.value("load_errors", schema="hs.customer") == 1
    loader, _ = counting(ann(11))
    assert await cache.get_or_load(key, loader) == ann(11)


async def test_wrong_type_from_the_loader_is_refused_and_not_cached(cache: Cache) -> None:
    key = CUSTOMER.key("acme", customer_id=12)
    with pytest.raises(ValueTypeError, match=r"hs\.customer"):
        await cache.get_or_load(key, counting("oops")[0])
    assert await cache.store.get(cache.lease_key(key)) is None
    assert await cache.get(key) is None


async def test_a_value_too_large_to_read_back_is_never_written(thorbis_redis_url: str) -> None:
    """A value whose body is larger than ``max_value_size`` would be refused by every
    read (the bound against decompression bombs), so it is not written: ``set`` raises
    naming the schema and the sizes, and drops what the key held (the host meant to
    replace it); a read-through returns the loaded value uncached, its lease released,
    and counts it. Before, a compressible one was written, then dropped as corrupt by
    every read, and every ``get_or_load`` called the loader and wrote it again."""
    settings = CacheSettings(codec=CodecSettings(max_value_size=64 * 1024))
    big, person = "x" * 100_000, attrs.evolve(ann(21), notes=["y" * 100_000])
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=RING,
                              settings=settings) as cache:
        report = BIG.key("acme", id=21)
        await cache.set(report, "small")
        with pytest.raises(ValueTooLargeError, match=r"hs\.report.*100005 bytes.*65536"):
            await cache.set(report, big)
        assert await cache.get(report) is None  # not the value it was meant to replace
        loader, calls = counting(big)
        for _ in range(2):
            assert await cache.get_or_load(BIG.key("acme", id=22), loader) == big
            assert await cache.store.get(cache.lease_key(BIG.key("acme", id=22))) is None
        assert calls == [2]
        assert await cache.get(BIG.key("acme", id=22)) is None
        assert cache.metrics.value("oversized_loads", schema="hs.report") == 2
        entity = ENTITY.key("acme", customer_id=21)
        hash_loader, hash_calls = counting(person)
        for _ in range(2):
            assert await cache.hash(entity).get_or_load(hash_loader) == person
            assert await cache.store.get(cache.lease_key(entity)) is None
        assert hash_calls == [2]
        assert cache.metrics.value("oversized_loads", schema=ENTITY.name) == 2
        for write in (lambda: cache.hash(entity).replace(person),
                      lambda: cache.hash(entity).update({"notes": person.notes})):
            await cache.hash(entity).replace(ann(21))
            with pytest.raises(ValueTooLargeError, match=r"hs\.customer_hash"):
                await write()
            assert await cache.hash(entity).get() is None
        assert await cache.get(BIG.key("acme", id=23)) is None
        assert cache.metrics.for_schema("hs.report").corrupt == {}


@pytest.mark.parametrize("ttl", [0, -60, math.nan, math.inf, 366 * 86400, "10", True])
async def test_a_ttl_given_per_call_is_checked_as_a_schema_ttl(cache: Cache, ttl: Any) -> None:
    """A per-call ``ttl=`` outside (0, 1 year], or not a number, is refused naming the
    schema and the parameter, before anything is loaded or written (it used to become
    a TTL of 1 ms, a raw ValueError or OverflowError, or a script error from Redis)."""
    label = LABEL.key("acme", name="ttl")
    await cache.set(label, "kept")
    loader, calls = counting("loaded")
    with pytest.raises(InvalidParameterError, match=r"hs\.label.*ttl") as refused:
        await cache.set(label, "written", ttl=ttl)
    assert "1 year" in str(refused.value)
    with pytest.raises(InvalidParameterError, match=r"hs\.label.*ttl"):
        await cache.get_or_load(LABEL.key("acme", name="other"), loader, ttl=ttl)
    with pytest.raises(InvalidParameterError, match=r"hs\.customer_hash.*ttl"):
        await cache.hash(ENTITY.key("acme", customer_id=1)).get_or_load(loader, ttl=ttl)
    with pytest.raises(InvalidParameterError, match=r"hs\.customer_hash.*ttl"):
        await cache.hash(ENTITY.key("acme", customer_id=1)).replace(ann(), ttl=ttl)
    assert calls == [0]
    assert await cache.get(label) == "kept"
    assert await cache.store.get(cache.lease_key(LABEL.key("acme", name="other"))) is None


async def test_a_dead_lease_holder_costs_one_bounded_wait(thorbis_redis_url: str) -> None:
    settings = CacheSettings(lease_wait=0.1)
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=RING,
                              settings=settings) as c:
        key = CUSTOMER.key("acme", customer_id=13)
        # A lease held by a client that crashed mid-load.
        await c.store.set(c.lease_key(key), b"dead-client-token", 60_000)
        loader, calls = counting(ann(13))
        assert await c.get_or_load(key, loader) == ann(13)
        assert calls[0] == 1
        assert c.metrics.value("lease_timeouts", schema="hs.customer") == 1
        assert await c.get(key) is None  # not cached: the lease was not ours


async def test_early_recompute_refreshes_a_hot_key_before_it_expires(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = HOT.key("acme", id=1)
    loader, calls = counting(1, delay=0.05)  # the recompute cost XFetch weighs: 50 ms
    assert await cache.get_or_load(key, loader) == 1
    assert calls[0] == 1
    monkeypatch.setattr(thorbis_cache.cache.fill.random, "random", lambda: 0.0)  # ln(1) = 0
    assert await cache.get_or_load(key, counting(2)[0]) == 1  # far from expiry: a hit
    # The unluckiest draw: -ln(2**-53) * 50 ms = 1.8 s, beyond the 1 s TTL.
    monkeypatch.setattr(thorbis_cache.cache.fill.random, "random", lambda: 1.0 - 2**-53)
    assert await cache.get_or_load(key, counting(2)[0]) == 2  # recomputed early
    assert await cache.get(key) == 2
    assert cache.metrics.value("early_recomputes", schema="hs.hot") == 1


def test_xfetch_formula() -> None:
    f = thorbis_cache.cache.fill.should_recompute_early
    assert not f(now_ms=1000, expires_at_ms=2000, delta_ms=100, beta=1.0, rand=0.5)
    assert f(now_ms=1950, expires_at_ms=2000, delta_ms=100, beta=1.0, rand=0.5)
    assert f(now_ms=2000, expires_at_ms=2000, delta_ms=0, beta=1.0, rand=1.0)
    assert not f(now_ms=0, expires_at_ms=0, delta_ms=100, beta=1.0, rand=0.01)


async def test_redis_killed_mid_run_degrades_then_recovers(
    thorbis_redis_server: RedisServer, thorbis_standalone_redis_url: str
) -> None:
    async with Cache.from_url(thorbis_standalone_redis_url, registry(), keyring=RING) as c:
        key = CUSTOMER.key("acme", customer_id=20)
        loader, calls = counting(ann(20))
        await c.get_or_load(key, loader)
        thorbis_redis_server.kill()
        assert await c.get_or_load(key, loader) == ann(20)  # from the loader
        assert c.metrics.value("degraded_loads", schema="hs.customer") == 1
        thorbis_redis_server.restart()
        assert await c.get_or_load(key, loader) == ann(20)
        assert await c.get(key) == ann(20)  # cached again after recovery
        assert calls[0] == 3


# --------------------------------------------------------------------------- structures


async def test_entity_hash_partial_update_and_optimistic_version(cache: Cache) -> None:
    h = cache.hash(ENTITY.key("acme", customer_id=1))
    assert await h.get() is None
    assert await h.update({"name": "X"}) is None  # nothing cached: nothing to update
    assert await h.replace(ann()) == 1
    got = await h.get_versioned()
    assert got is not None
    assert (got.value, got.version) == (ann(), 1)
    assert await h.update({"name": "Bea", "status": Status.ACTIVE}, expected_version=1) == 2
    assert await h.get_fields("name", "status") == {"name": "Bea", "status": Status.ACTIVE}
    from thorbis_cache.errors import InvalidParameterError, VersionConflictError

    with pytest.raises(VersionConflictError, match="expected version 1"):
        await h.update({"name": "Late"}, expected_version=1)
    with pytest.raises(ValueTypeError, match="field name"):
        await h.update({"name": 5})
    with pytest.raises(InvalidParameterError, match="not a field"):
        await h.update({"nope": 5})
    assert await h.replace(ann()) == 3
    raw = await cache.store.command("HGET", cache.redis_key(ENTITY.key("acme", customer_id=1)),
                                    "email")
    assert b"ann@example.com" not in raw


async def test_entity_hash_field_swap_is_a_miss(cache: Cache) -> None:
    key = ENTITY.key("acme", customer_id=2)
    h = cache.hash(key)
    await h.replace(ann(2))
    rk = cache.redis_key(key)
    name = await cache.store.command("HGET", rk, "name")
    await cache.store.command("HSET", rk, "email", name)  # a field moved to another field
    assert await h.get() is None
    assert await cache.store.command("EXISTS", rk) == 0


async def test_sorted_set_and_geo_helpers(cache: Cache) -> None:
    by_priority = KeySchema("hs.wo_by_priority", int, params={"status": str},
                            kind=SchemaKind.ZSET, ttl=60)
    appointments = KeySchema("hs.appointments", str, params={"day": dt.date},
                             kind=SchemaKind.GEO, ttl=60)
    cache.registry.register(by_priority)
    cache.registry.register(appointments)
    z = cache.zset(by_priority.key("acme", status="open"))
    assert await z.add({101: 1.0}) == 0  # not cached: a partial set would read as whole
    assert await z.card() == 0
    assert await z.add({101: 3.0, 102: 9.5, 103: 1.0}, replace=True) == 3
    assert await z.add({104: 4.0, 101: 3.0}) == 1  # merged into the cached set
    assert await z.remove(104) == 1
    assert await z.top(2) == [(102, 9.5), (101, 3.0)]
    assert await z.range_by_score(2, 10) == [(101, 3.0), (102, 9.5)]
    assert await z.score(103) == 1.0
    assert await z.remove(103) == 1
    assert await z.add({201: 1.0}, replace=True) == 1
    assert await z.card() == 1
    rk = cache.redis_key(by_priority.key("acme", status="open"))
    assert 0 < await cache.store.command("PTTL", rk) <= 60_000

    g = cache.geo(appointments.key("acme", day=dt.date(2024, 5, 1)))
    await g.add({"appt:1": (-97.7431, 30.2672), "appt 2": (-97.7000, 30.3000),
                 "far": (-96.80, 32.78)}, replace=True)
    near = await g.within(-97.7431, 30.2672, 10_000)
    assert [m for m, _ in near] == ["appt:1", "appt 2"]
    assert near[0][1] < 1
    pos = await g.position("appt 2")
    assert pos is not None
    assert abs(pos[0] + 97.7) < 1e-4
    assert await g.position("nope") is None


# --------------------------------------------------------------------------- stuck server


async def test_a_stuck_server_is_a_bounded_wait_not_a_hang(
    thorbis_standalone_redis_url: str,
) -> None:
    """A live server that stops answering (here: DEBUG SLEEP) costs at most the store
    timeout; the caller's task is not left cancelled and get_or_load degrades."""
    from thorbis_cache import RedisStore

    store = RedisStore.from_url(thorbis_standalone_redis_url, timeout=0.2)
    c = Cache(store, registry(), keyring=RING, owns_store=True)
    blocker = redis.asyncio.Redis.from_url(thorbis_standalone_redis_url)
    try:
        key = CUSTOMER.key("acme", customer_id=30)
        await c.set(key, ann(30))
        sleeper = asyncio.create_task(blocker.execute_command("DEBUG", "SLEEP", "1"))
        await asyncio.sleep(0.05)
        with pytest.raises(RedisUnavailableError, match=r"no reply within 0\.2s"):
            await c.get(key)
        loader, _ = counting(ann(30, "From DB"))
        assert (await c.get_or_load(key, loader)).name == "From DB"
        assert c.metrics.value("degraded_loads", schema="hs.customer") == 1
        await sleeper
        assert await c.get(key) == ann(30)  # the pool recovered, the entry is intact
        current = asyncio.current_task()
        assert current is not None
        assert current.cancelling() == 0
    finally:
        await c.aclose()
        await blocker.aclose()


async def test_more_concurrent_calls_than_connections_queue_instead_of_failing(
    thorbis_redis_url: str,
) -> None:
    """redis-py's pool raises "Too many connections" past its size; the store queues."""
    from thorbis_cache import RedisStore

    store = RedisStore.from_url(thorbis_redis_url, max_connections=4)
    c = Cache(store, registry(), keyring=RING, owns_store=True)
    try:
        keys = [LABEL.key("acme", name=f"k{i}") for i in range(50)]
        await asyncio.gather(*(c.set(k, f"v{i}") for i, k in enumerate(keys)))
        got = await asyncio.gather(*(c.get(k) for k in keys * 4))
        assert got == [f"v{i}" for i in range(50)] * 4
        many = await asyncio.gather(*(c.get_many(keys[:10]) for _ in range(40)))
        assert all(batch == [f"v{i}" for i in range(10)] for batch in many)
        assert store._gate.busy == 0
    finally:
        await c.aclose()
