"""``explain``: the API on every topology (single server, Cluster, Sentinel) and the
``thorbis-cache explain`` command run as a user runs it (a subprocess, real servers)."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
from thorbis_home_services.models import (
    AccountStatus,
    CustomerSummary,
    CustomerType,
    PaymentStatus,
    TechnicianPerformance,
    TechnicianRole,
)
from thorbis_home_services.schemas import CUSTOMER_SUMMARY, TECHNICIAN_PERFORMANCE

from thorbis_cache import Cache, KeyRing, KeySchema, NearCache, SchemaRegistry
from thorbis_cache.cache.keys import SchemaKind
from thorbis_cache.errors import UnknownSchemaError
from thorbis_cache.observability.explain import explain, parse_envelope_header
from thorbis_cache.plugins.declarations import InvalidationRule, RuleTarget

CLI = str(Path(sys.executable).with_name("thorbis-cache"))


@attrs.frozen
class Visit:
    id: int
    note: str


VISIT = KeySchema("ex.visit", Visit, params={"visit_id": int}, ttl=300, tags=("ex.visits",),
                  early_recompute=1.0)
SECRET = KeySchema("ex.secret", Visit, params={"visit_id": int}, ttl=300, sensitive=True)
ENTITY = KeySchema("ex.entity", Visit, params={"visit_id": int}, ttl=300,
                   kind=SchemaKind.HASH, sensitive=True, tags=("ex.visits",))
RANKING = KeySchema("ex.ranking", int, params={"day": int}, ttl=300, kind=SchemaKind.ZSET)
NEAR = KeySchema("ex.near", str, params={"n": int}, ttl=300, near_ttl=30)
OTHER = KeySchema("ex.other", str, params={"n": int}, ttl=300)

RING = KeyRing.from_string(f"k7:{KeyRing.generate().to_string().split(':', 1)[1]}")


def registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for schema in (VISIT, SECRET, ENTITY, RANKING, NEAR):
        reg.register(schema, owner="explain_tests")
    return reg


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    async with Cache.from_url(thorbis_redis_url, registry(), keyring=RING,
                              near=NearCache()) as c:
        yield c


# ----------------------------------------------------------------- the API


async def test_a_value_with_tags_and_timing(cache: Cache) -> None:
    key = VISIT.key("acme", visit_id=1)
    await cache.set(key, Visit(1, "gate code"))
    await cache.set(VISIT.key("acme", visit_id=2), Visit(2, "dog"))
    await cache.set(VISIT.key("globex", visit_id=1), Visit(1, "other tenant"))

    rule = InvalidationRule("ex.visit_rows", "ex.visits", ["UPDATE", "DELETE"],
                            [RuleTarget(tag="ex.visits")])
    unrelated = InvalidationRule("ex.others", "ex.others", ["UPDATE"],
                                 [RuleTarget(schema="ex.ranking", params={"day": "day"})])
    r = await explain(cache, key, rules=[rule, unrelated])

    assert r.rules == ("ex.visit_rows (ex.visits DELETE/UPDATE): tag ex.visits",)
    assert r.exists
    assert r.redis_type == "string"
    assert r.kind == "value"
    assert r.redis_key == "tc:{acme}:ex.visit:1"
    assert r.params == {"visit_id": "1"}
    assert r.owner == "explain_tests"
    assert r.tenant == "acme"
    assert r.slot == (await explain(cache, VISIT.key("acme", visit_id=9))).slot
    assert r.ttl_ms is not None
    assert 0 < r.ttl_ms <= 300_000
    assert r.size_bytes == len(await cache.store.command("GET", r.redis_key))
    assert r.opens is True
    assert r.corrupt_reason is None
    assert r.value is None
    env = r.envelope
    assert env is not None
    assert env.format == 1
    assert env.schema_version == 1
    assert env.timing
    assert not env.encrypted
    assert env.key_id is None
    # Two keys of acme carry the tag; globex's set is another one.
    (tag,) = r.tags
    assert (tag.tag, tag.members, tag.holds_key) == ("ex.visits", 2, True)
    assert tag.redis_key == "tc:~tag:{acme}:ex.visits"
    assert r.xfetch.beta == 1.0
    assert r.xfetch.expires_at_ms == env.expires_at_ms
    assert r.xfetch.seconds_left is not None
    assert 0 < r.xfetch.seconds_left <= 300
    assert r.xfetch.recompute_probability is not None
    assert 0 <= r.xfetch.recompute_probability < 1
    assert not r.lease.held
    assert r.lease.ttl_ms is None
    assert r.near is None  # VISIT does not use the near cache
    shown = await explain(cache, key, show_value=True)
    assert shown.value == {"id": 1, "note": "gate code"}
    assert json.loads(json.dumps(shown.to_dict()))["value"] == {"id": 1, "note": "gate code"}


async def test_a_node_is_named_on_a_cluster_only(cache: Cache) -> None:
    r = await explain(cache, VISIT.key("acme", visit_id=1))
    assert not r.exists
    assert r.redis_type is None
    assert r.opens is None
    if cache.store.is_cluster:
        assert r.node is not None
        assert r.node.startswith("127.0.0.1:")
    else:
        assert r.node is None


async def test_a_tampered_entry_reports_the_reason(cache: Cache) -> None:
    key = VISIT.key("acme", visit_id=1)
    await cache.set(key, Visit(1, "gate code"))
    rk = cache.redis_key(key)
    data = await cache.store.command("GET", rk)
    # Flip one byte of the body: the CRC no longer matches.
    last = len(data) - 1
    await cache.store.command("SETRANGE", rk, last, bytes([data[last] ^ 0x01]))

    r = await explain(cache, key)

    assert r.exists
    assert r.opens is False
    assert r.corrupt_reason == "checksum"
    # Explaining does not drop it (a read through the cache would).
    assert await cache.store.command("EXISTS", rk) == 1
    assert await cache.get(key) is None
    assert await cache.store.command("EXISTS", rk) == 0


async def test_a_copied_encrypted_entry_does_not_open(cache: Cache) -> None:
    one, two = SECRET.key("acme", visit_id=1), SECRET.key("acme", visit_id=2)
    await cache.set(one, Visit(1, "private"))
    data = await cache.store.command("GET", cache.redis_key(one))
    await cache.store.command("SET", cache.redis_key(two), data, "PX", 60_000)

    good, copied = await explain(cache, one), await explain(cache, two)

    assert good.opens is True
    assert good.envelope is not None
    assert good.envelope.encrypted
    assert good.envelope.key_id == "k7"
    assert copied.opens is False
    assert copied.corrupt_reason == "auth_failed"
    assert copied.envelope == good.envelope  # the header is the same; the binding is not


async def test_a_hash_field_that_does_not_open_is_named(cache: Cache) -> None:
    key = ENTITY.key("acme", visit_id=5)
    await cache.hash(key).replace(Visit(5, "hash"))
    r = await explain(cache, key, show_value=True)
    assert r.redis_type == "hash"
    assert r.length == 3
    assert r.opens is True
    assert r.value == {"id": 5, "note": "hash"}
    assert r.envelope is not None
    assert r.envelope.key_id == "k7"
    assert r.size_bytes is not None
    assert r.size_bytes > 0
    assert r.tags[0].members == 1
    assert r.tags[0].holds_key

    rk = cache.redis_key(key)
    await cache.store.command("HSET", rk, "note",
                              await cache.store.command("HGET", rk, "id"))
    r = await explain(cache, key)
    assert r.opens is False
    assert r.corrupt_reason == "auth_failed"
    assert r.corrupt_detail is not None
    assert "'note'" in r.corrupt_detail


async def test_a_sorted_set_and_a_cached_absence(cache: Cache) -> None:
    key = RANKING.key("acme", day=3)
    await cache.zset(key).add({7: 1.0, 8: 2.0}, replace=True)
    r = await explain(cache, key, show_value=True)
    assert (r.redis_type, r.length, r.opens, r.value) == ("zset", 2, True, [7, 8])

    await cache.store.command("SET", cache.redis_key(key), b"\x00tc:absent", "PX", 5000)
    r = await explain(cache, key)
    assert r.redis_type == "string"
    assert r.marker == "absent"
    assert r.opens is None


async def test_a_fill_in_flight_shows_its_lease(cache: Cache) -> None:
    key = VISIT.key("acme", visit_id=3)
    started, release = asyncio.Event(), asyncio.Event()

    async def load() -> Visit:
        started.set()
        await release.wait()
        return Visit(3, "loaded")

    fill = asyncio.create_task(cache.get_or_load(key, load))
    await started.wait()
    try:
        r = await explain(cache, key)
        assert not r.exists
        assert r.lease.held
        assert r.lease.redis_key == cache.lease_key(key)
        assert r.lease.ttl_ms is not None
        assert r.lease.ttl_ms > 0
        # The lease already recorded the key under its tag (so an invalidation reaches it).
        assert r.tags[0].members == 1
    finally:
        release.set()
        await fill
    r = await explain(cache, key)
    assert r.exists
    assert not r.lease.held
    assert r.opens is True


async def test_near_cache_and_dependents(cache: Cache) -> None:
    key = NEAR.key("acme", n=1)
    await cache.set(key, "hello")
    assert (await explain(cache, key)).near is False
    if await cache.near_ready(5.0):
        assert await cache.get(key) == "hello"
        assert (await explain(cache, key)).near is True

    base = VISIT.key("acme", visit_id=1)
    await cache.set(base, Visit(1, "base"))
    await cache.depend(key, on=base)
    r = await explain(cache, base)
    assert r.dependents == 1
    assert r.dependents_sample == (cache.redis_key(key),)


async def test_an_unregistered_schema_is_refused(cache: Cache) -> None:
    with pytest.raises(UnknownSchemaError, match=r"'ex\.other'.*ex\.visit"):
        await explain(cache, OTHER.key("acme", n=1))


def test_a_header_that_is_not_an_envelope() -> None:
    assert parse_envelope_header(b"") is None
    assert parse_envelope_header(b"XX\x01\x00\x00\x01") is None
    assert parse_envelope_header(b"TC\x01\x06\x00\x01") is None  # timing cut short


# ----------------------------------------------------------------- the command


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("THORBIS_")}
    full.update(env or {})
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=full,
                          timeout=60, check=False)


@pytest.fixture
async def hs_cache(thorbis_standalone_redis_url: str) -> AsyncIterator[Cache]:
    from thorbis_cache.plugins.manager import PluginManager

    manager = PluginManager()
    await manager.load(["home_services"])
    async with Cache.from_url(thorbis_standalone_redis_url, manager.registry,
                              keyring=RING) as c:
        yield c


def _perf(n: int) -> TechnicianPerformance:
    return TechnicianPerformance(n, "Ada", "Lovelace", TechnicianRole.TECHNICIAN, 10, 9,
                                 decimal.Decimal("0.9"), 1.5, decimal.Decimal("1200.00"),
                                 4.8, 7)


def _summary(n: int) -> CustomerSummary:
    at = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC)
    return CustomerSummary(n, "Ann", "Lee", "ann@example.com", "555-0100",
                           CustomerType.RESIDENTIAL, AccountStatus.ACTIVE,
                           PaymentStatus.CURRENT, 3, 2, decimal.Decimal("99.50"), at, at, at)


async def test_cli_explains_a_cached_key(hs_cache: Cache,
                                         thorbis_standalone_redis_url: str) -> None:
    key = TECHNICIAN_PERFORMANCE.key("acme", technician_id=4)
    await hs_cache.set(key, _perf(4))
    url = thorbis_standalone_redis_url
    args = ("explain", "--tenant", "acme", "hs.technician_performance", "technician_id=4",
            "--redis-url", url, "--plugin", "home_services")

    text = run(*args)
    assert text.returncode == 0, text.stderr
    assert "tc:{acme}:hs.technician_performance:4" in text.stdout
    assert "owner home_services" in text.stdout
    assert "opens       yes" in text.stdout
    assert "hs.tech_metrics: 1 member(s)" in text.stdout

    got = run(*args, "--json")
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert report["owner"] == "home_services"
    assert report["opens"] is True
    assert report["tags"][0]["members"] == 1
    assert report["mirrors"] == "hs.technician_performance"
    assert report["rules"] == []  # the view's refresh reaches it, through its tag
    assert report["value"] is None


async def test_cli_opens_an_encrypted_entry_with_the_ring(
        hs_cache: Cache, thorbis_standalone_redis_url: str) -> None:
    await hs_cache.set(CUSTOMER_SUMMARY.key("acme", customer_id=9), _summary(9))
    args = ("explain", "-t", "acme", "hs.customer_summary", "customer_id=9", "--json",
            "--redis-url", thorbis_standalone_redis_url, "-p", "home_services")

    without = run(*args)
    assert without.returncode == 0, without.stderr
    report = json.loads(without.stdout)
    assert report["envelope"]["key_id"] == "k7"
    assert report["envelope"]["encrypted"]
    assert report["opens"] is None
    assert report["value"] is None
    with_ring = run(*args, "--show-value", env={"THORBIS_KEYRING": RING.to_string()})
    assert with_ring.returncode == 0, with_ring.stderr
    report = json.loads(with_ring.stdout)
    assert report["opens"] is True
    assert report["value"]["customer_id"] == 9
    assert report["value"]["email"] == "ann@example.com"


def test_cli_exit_codes(thorbis_standalone_redis_url: str) -> None:
    url = thorbis_standalone_redis_url
    base = ("explain", "--redis-url", url, "-p", "home_services", "-t", "acme")

    absent = run(*base, "hs.customer_summary", "customer_id=1")
    assert absent.returncode == 1
    assert "not cached" in absent.stdout

    unknown = run(*base, "hs.customomer", "customer_id=1")
    assert unknown.returncode == 64
    assert "unknown key schema 'hs.customomer'" in unknown.stderr
    assert "hs.customer" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1

    bad = run(*base, "hs.customer_summary", "customer_id=abc")
    assert bad.returncode == 64
    assert "'hs.customer_summary', parameter 'customer_id'" in bad.stderr

    missing = run(*base, "hs.customer_summary")
    assert missing.returncode == 64
    assert "'customer_id': missing" in missing.stderr

    tenant = run("explain", "--redis-url", url, "-p", "home_services", "-t", "Bad Tenant",
                 "hs.customer_summary", "customer_id=1")
    assert tenant.returncode == 64
    assert "invalid tenant id" in tenant.stderr

    down = run("explain", "--redis-url", "redis://127.0.0.1:1/0", "-p", "home_services",
               "-t", "acme", "hs.customer_summary", "customer_id=1")
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert "127.0.0.1:1" in down.stderr
