"""``thorbis-cache stats`` driven as a user would: its estimates against the true counts
on every topology, and recommendations triggered by real figures: a real ``/metrics``
(hit ratio, slow operations) and real idle times and ages (TTLs)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
from core_testing import HS, HsEnv
from prometheus_client.parser import text_string_to_metric_families
from thorbis_home_services.schemas import CUSTOMER_SUMMARY, WORK_ORDER

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.observability import Exporter, HttpServer, MetricsApp
from thorbis_cache.observability.health import HitCounts
from thorbis_cache.observability.recommendations import recommend
from thorbis_cache.observability.stats import sample_stats
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.testing.servers import RedisServer

CLI = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "thorbis-cache")
#: 5,000 keys: tenant -> keys of each of the two schemas.
SEED = {"acme": (1500, 700), "globex": (900, 600), "initech": (800, 500)}


def stats(*args: str) -> dict[str, Any]:
    """``thorbis-cache stats --json ARGS`` as a user would run it: the report."""
    done = subprocess.run([CLI, "stats", "--plugin", HS, "--json", *args], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def seed(redis_url: str) -> tuple[Counter[str], Counter[str], int]:
    """Write :data:`SEED` (keys built by the schemas, 30-120 bytes each); the true keys
    by tenant and by schema and their ``MEMORY USAGE`` sum."""
    tenants: Counter[str] = Counter()
    schemas: Counter[str] = Counter()
    keys = []
    for tenant, (orders, summaries) in SEED.items():
        for schema, n in ((WORK_ORDER, orders), (CUSTOMER_SUMMARY, summaries)):
            param = schema.params[0].name
            keys += [(schema.key(tenant, **{param: i}).redis_key("tc"), 30 + i % 91)
                     for i in range(n)]
            tenants[tenant] += n
            schemas[schema.name] += n
    async with RedisStore.from_url(redis_url) as store:
        for start in range(0, len(keys), 250):
            await asyncio.gather(*(store.command("SET", k, b"v" * size, "EX", 1200)
                                   for k, size in keys[start:start + 250]))
        memory = 0
        for start in range(0, len(keys), 250):
            sizes = await asyncio.gather(*(store.command("MEMORY", "USAGE", k)
                                           for k, _ in keys[start:start + 250]))
            memory += sum(int(s) for s in sizes)
    return tenants, schemas, memory


async def test_the_estimates_hold_the_true_counts_on_every_topology(thorbis_redis_url: str
                                                                    ) -> None:
    tenants, schemas, memory = await seed(thorbis_redis_url)
    total = sum(tenants.values())
    # 99.99% intervals: five shares checked per run must all hold, so the test cannot
    # fail by chance (a 95% interval misses 1 time in 20); their width is checked too.
    report = await asyncio.to_thread(stats, "--redis-url", thorbis_redis_url,
                                     "--sample", "2000", "--confidence", "0.9999")
    assert report["total_keys"] == total
    assert 1990 <= report["sampled"] <= 2010  # shared among masters, rounded
    assert report["method"].startswith("99.99% intervals: normal approximation, "
                                       "stratified by master")
    assert sum(n["dbsize"] for n in report["nodes"]) == total
    assert len(report["nodes"]) == (3 if thorbis_redis_url.startswith("redis+cluster") else 1)
    for groups, truth in ((report["by_tenant"], tenants), (report["by_schema"], schemas)):
        assert {g["name"] for g in groups} == set(truth)
        for g in groups:
            share = truth[g["name"]] / total
            assert g["share"]["low"] <= share <= g["share"]["high"], (g, share)
            assert g["share"]["high"] - g["share"]["low"] < 0.08, g
            assert g["keys"]["low"] <= truth[g["name"]] <= g["keys"]["high"], g
    assert report["memory_bytes"]["low"] <= memory <= report["memory_bytes"]["high"]
    # Sampled far more than there is: every master is read whole, the counts are exact.
    exact = await asyncio.to_thread(stats, "--redis-url", thorbis_redis_url,
                                    "--sample", "6000", "--batch", "1000")
    assert all(n["complete"] for n in exact["nodes"])
    assert {g["name"]: g["keys"] for g in exact["by_tenant"]} == {
        t: {"value": float(n), "low": float(n), "high": float(n)} for t, n in tenants.items()}
    assert exact["memory_bytes"]["value"] == memory
    profiles = {p["schema"]: p for p in exact["ttl"]}
    # Written with EX 1200 under a TTL of 1800 s (work orders): 600 s old by their TTL
    # (more than its jitter, 180 s), idle a few seconds: read since written.
    assert profiles[WORK_ORDER.name]["judged"] == sum(n for n, _ in SEED.values())
    assert profiles[WORK_ORDER.name]["unread_share"] == 0.0


async def test_a_low_hit_ratio_from_a_real_metrics_endpoint_is_recommended(hs_env: HsEnv
                                                                          ) -> None:
    cache = hs_env.app.cache
    exporter = Exporter(cache, dsn=hs_env.dsn)
    try:
        for i in range(150):  # nothing cached: every read misses
            assert await cache.get(WORK_ORDER.key("acme", work_order_id=50_000 + i)) is None
        async with HttpServer(MetricsApp(exporter)) as server:
            report = await asyncio.to_thread(
                stats, "--redis-url", hs_env.redis_url, "--metrics-url",
                server.url + "/metrics")
    finally:
        exporter.detach()
    low = [r for r in report["recommendations"] if r["kind"] == "low_hit_ratio"]
    assert low == [{
        "kind": "low_hit_ratio", "subject": WORK_ORDER.name,
        "figures": {"hit_ratio": 0.0, "hits": 0, "misses": 150},
        "message": low[0]["message"]}]
    assert low[0]["message"].startswith(
        f"hit ratio of {WORK_ORDER.name} is 0.00 over 150 reads (0 hits, 150 misses; "
        "under 0.8)")
    assert report["traffic"]["schemas"] == {WORK_ORDER.name: 150.0}


async def test_idle_times_under_an_lfu_policy_are_reported_unavailable() -> None:
    server = RedisServer(extra_args=["--maxmemory-policy", "volatile-lfu"]).start()
    try:
        await seed(server.url)
        report = await asyncio.to_thread(stats, "--redis-url", server.url, "--sample", "300")
        text = (await asyncio.to_thread(
            subprocess.run, [CLI, "stats", "--plugin", HS, "--redis-url", server.url,
                             "--sample", "300"], capture_output=True, text=True, timeout=300,
            check=True)).stdout
    finally:
        server.stop()
    assert report["idle_unavailable"].startswith(
        "OBJECT IDLETIME is not tracked under maxmemory-policy volatile-lfu")
    assert all(p["judged"] == 0 for p in report["ttl"])
    assert not [r for r in report["recommendations"] if r["kind"].startswith("ttl_")]
    assert "TTL against reuse not judged: OBJECT IDLETIME is not tracked" in text
    assert "300 of 5000 keys sampled with SCAN" in text


async def test_slow_operations_from_a_real_metrics_endpoint_are_recommended(
        thorbis_redis_url: str) -> None:
    """A loader that takes 80 ms (a slow database) makes ``get_or_load`` slow for real:
    the exporter's latency histogram says so, and ``stats`` names the operation."""
    registry = SchemaRegistry()
    schema = KeySchema("t.note", Note, params={"id": int}, ttl=60)
    registry.register(schema, owner="test")
    async with Cache.from_url(thorbis_redis_url, registry) as cache:
        exporter = Exporter(cache)

        async def slow_load() -> Note:
            await asyncio.sleep(0.08)
            return Note("loaded")

        try:
            keys = [schema.key("acme", id=70_000 + i) for i in range(120)]
            loaded = await asyncio.gather(*(cache.get_or_load(k, slow_load) for k in keys))
            assert loaded == [Note("loaded")] * 120
            async with HttpServer(MetricsApp(exporter)) as server:
                report = await asyncio.to_thread(
                    stats, "--redis-url", thorbis_redis_url, "--metrics-url",
                    server.url + "/metrics")
        finally:
            exporter.detach()
    slow = [r for r in report["recommendations"] if r["kind"] == "slow_operation"]
    assert [r["subject"] for r in slow] == ["t.note get_or_load"]
    assert slow[0]["figures"]["calls"] == 120
    # Histogram buckets bound the quantile: at least the 80 ms every call slept.
    assert slow[0]["figures"]["p99_seconds"] >= 0.08
    assert slow[0]["message"].startswith("99th percentile of get_or_load on t.note is ")


@attrs.frozen
class Note:
    text: str


async def test_ttls_far_from_the_observed_reuse_are_recommended() -> None:
    """Real idle times (``OBJECT IDLETIME``, one-second resolution) against real ages: a
    schema whose entries nobody reads gets ``ttl_too_long``; one read once early and then
    left for most of its TTL gets ``ttl_too_short``; one read just before the sample gets
    neither. About 9 s of waiting: idle times are only known to the second."""
    registry = SchemaRegistry()
    schemas = {name: KeySchema(f"t.{name}", Note, params={"id": int}, ttl=10)
               for name in ("unread", "read_early", "read_late")}
    for schema in schemas.values():
        registry.register(schema, owner="test")
    server = RedisServer().start()
    try:
        async with Cache.from_url(server.url, registry) as cache:
            keys = {name: [s.key("acme", id=i) for i in range(30)]
                    for name, s in schemas.items()}
            for name in schemas:
                for key in keys[name]:
                    await cache.set(key, Note(name))
            # A read must come later than the age's one-second slack plus the clock's
            # one-second resolution to be told apart from the write.
            await asyncio.sleep(2.5)
            for key in keys["read_early"]:
                assert await cache.get(key) == Note("read_early")
            await asyncio.sleep(6.0)
            for key in keys["read_late"]:
                assert await cache.get(key) == Note("read_late")
            sampled = await sample_stats(cache.store, registry, sample=500)
    finally:
        server.stop()
    found = {(r.kind, r.subject): r for r in recommend(sampled, None)}
    assert set(found) == {("ttl_too_long", "t.unread"), ("ttl_too_short", "t.read_early")}
    too_long = found[("ttl_too_long", "t.unread")].figures
    assert too_long["unread_share"] == 1.0
    assert too_long["judged"] == 30
    assert 8 <= too_long["median_age_s"] <= 10
    too_short = found[("ttl_too_short", "t.read_early")].figures
    assert 5 <= too_short["median_idle_s"] <= 8
    assert too_short["ttl_s"] == 10


def test_reads_answered_by_the_near_cache_are_hits() -> None:
    """Found as an operator would: a schema whose reads L1 answered 98% of the time read
    as a hit ratio of 0 in health, stats and the alert, which counted Redis's hits only.
    A read L1 could not answer is counted again by Redis's answer: not added."""
    text = "\n".join([
        "# TYPE thorbis_cache_hits_total counter",
        'thorbis_cache_hits_total{schema="hs.work_order"} 0',
        "# TYPE thorbis_cache_near_hits_total counter",
        'thorbis_cache_near_hits_total{schema="hs.work_order"} 5390',
        "# TYPE thorbis_cache_near_misses_total counter",
        'thorbis_cache_near_misses_total{schema="hs.work_order"} 110',
        "# TYPE thorbis_cache_misses_total counter",
        'thorbis_cache_misses_total{schema="hs.work_order"} 110', ""])
    counts = HitCounts.from_families(text_string_to_metric_families(text))
    assert (counts.hits, counts.misses) == ({"hs.work_order": 5390.0}, {"hs.work_order": 110.0})
