"""``thorbis-cache health`` driven as a user would (the installed console script, real
servers on every topology), and ``/health`` reporting the same checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from core_testing import HS, HsEnv
from thorbis_home_services.schemas import WORK_ORDER

from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.mv.scheduler import ScheduledView
from thorbis_cache.observability import Exporter, HttpServer, MetricsApp
from thorbis_cache.observability.health import assess
from thorbis_cache.observability.probe import ProbeResult
from thorbis_cache.postgres import outbox
from thorbis_cache.testing.servers import RedisServer

CLI = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "thorbis-cache")
EXIT = {"healthy": 0, "warning": 1, "unhealthy": 2}


def health(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``thorbis-cache health ARGS`` as a user would."""
    return subprocess.run([CLI, "health", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def health_json(*args: str) -> tuple[int, dict[str, Any]]:
    """``health --json ARGS``: exit status and the report."""
    done = health(*args, "--json")
    assert done.stderr == "", done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == EXIT[report["status"]], (done.returncode, report)
    return done.returncode, report


async def test_every_check_on_every_topology(hs_env_every_topology: HsEnv) -> None:
    env = hs_env_every_topology
    code, report = await asyncio.to_thread(
        health_json, "--redis-url", env.redis_url, "--dsn", env.dsn, "--plugin", HS)
    checks = report["checks"]
    for name in ("redis", "topology", "eviction", "memory", "queue", "postgres", "outbox",
                 "dead_letters"):
        assert checks[name]["status"] == "healthy", (name, checks[name])
    assert checks["redis"]["latency_ms"] > 0
    assert checks["hit_ratio"]["status"] == "unknown"
    assert "--metrics-url" in checks["hit_ratio"]["reason"]
    assert checks["outbox"]["backlog"] == await env.conn.fetchval(
        "SELECT count(*) FROM thorbis.outbox")
    # The views were never refreshed: a warning naming them, the whole report a warning.
    assert checks["views"]["status"] == "warning"
    assert "never refreshed" in checks["views"]["reason"]
    assert set(checks["views"]["views"]) == {
        v.name for p in env.app.plugins.plugins.values() for v in p.views}
    assert (code, report["status"]) == (1, "warning")
    topology = checks["topology"]
    assert all(r["state"] == "online" for r in topology["replicas"]), topology
    policies = set(checks["eviction"]["policies"].values())
    assert policies == {"volatile-lru"}
    if env.redis_url.startswith("redis+cluster"):
        assert topology["kind"] == "cluster"
        assert topology["cluster_state"] == "ok"
        assert topology["slots"] == {"assigned": 16384, "ok": 16384, "pfail": 0, "fail": 0}
        assert len(topology["masters"]) == 3
        assert len(topology["replicas"]) == 3
        assert len(checks["memory"]["nodes"]) == 3
    elif env.redis_url.startswith("redis+sentinel"):
        assert topology["kind"] == "sentinel"
        sentinel = topology["sentinel"]
        assert sentinel["answered"] is not None
        assert sentinel["flags"] == "master"
        assert sentinel["other_sentinels"] == 2
        assert sentinel["quorum"] == 2
        assert len(sentinel["replicas"]) == 2
        assert len(topology["replicas"]) == 2
        assert topology["reason"].startswith(f"sentinel: master {sentinel['master']}")
    else:
        assert topology["kind"] == "standalone"
        assert topology["masters"] == [env.redis_url.split("//")[1].split("/")[0]]


def test_a_stopped_redis_is_unhealthy_with_one_clear_line() -> None:
    server = RedisServer().start()
    server.stop()
    address = server.url.split("//")[1].split("/")[0]
    done = health("--redis-url", server.url)
    assert done.returncode == 2, done
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    failed = [line for line in lines if "not answering" in line]
    assert len(failed) == 1, lines
    assert failed[0].split()[:2] == ["unhealthy", "redis"]
    assert address in failed[0]
    assert lines[-1] == "unhealthy"
    code, report = health_json("--redis-url", server.url)
    assert code == 2
    assert report["checks"]["redis"]["status"] == "unhealthy"
    assert "topology" not in report["checks"]  # nothing else claimed about a dead server


def test_an_allkeys_lru_server_is_unhealthy_naming_the_policy() -> None:
    server = RedisServer(extra_args=["--maxmemory-policy", "allkeys-lru"]).start()
    try:
        code, report = health_json("--redis-url", server.url)
        plain = health("--redis-url", server.url)
    finally:
        server.stop()
    address = server.url.split("//")[1].split("/")[0]
    eviction = report["checks"]["eviction"]
    assert code == 2
    assert eviction["status"] == "unhealthy"
    assert eviction["policies"] == {address: "allkeys-lru"}
    assert eviction["reason"].startswith(f"maxmemory-policy allkeys-lru on {address}: ")
    assert "volatile-lru" in eviction["reason"]  # the fix
    assert report["checks"]["redis"]["status"] == "healthy"
    assert ["unhealthy", "eviction", "maxmemory-policy", "allkeys-lru"] in [
        line.split()[:4] for line in plain.stdout.splitlines()], plain.stdout


async def test_a_dead_lettered_outbox_row_is_a_warning(hs_env: HsEnv) -> None:
    # The worker's own path: a row claimed in a batch and dead-lettered with it.
    async with hs_env.conn.transaction():
        row, = await outbox.claim_batch(hs_env.conn, 1)
        await outbox.dead_letter(hs_env.conn, row, "rule hs.customers: bad parameter")
    code, report = await asyncio.to_thread(
        health_json, "--redis-url", hs_env.redis_url, "--dsn", hs_env.dsn, "--plugin", HS)
    dead = report["checks"]["dead_letters"]
    assert dead["status"] == "warning"
    assert dead["outbox_dead_letters"] == 1
    assert dead["queue_dead_letters"] == 0
    assert dead["reason"] == ("1 dead letter(s) in the outbox "
                              "(thorbis-cache outbox-deadletters list)")
    assert code == 1
    assert all(c["status"] != "unhealthy" for c in report["checks"].values())


def test_what_cannot_be_checked_exits_3_with_one_line(thorbis_standalone_redis_url: str
                                                      ) -> None:
    cases = {
        (): "error: no Redis URL: pass --redis-url or set THORBIS_REDIS_URL",
        ("--redis-url", "mysql://x"): "error: ",
        ("--redis-url", thorbis_standalone_redis_url, "--prefix", "Bad!"): "error: --prefix: ",
        ("--redis-url", thorbis_standalone_redis_url, "--metrics-url",
         "http://127.0.0.1:9/metrics"): "error: cannot read metrics from "
                                        "http://127.0.0.1:9/metrics: ",
    }
    for args, start in cases.items():
        done = health(*args)
        assert done.returncode == 3, (args, done)
        assert done.stdout == ""
        assert done.stderr.startswith(start), (args, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 -- http://127.0.0.1
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("reads", [0, 120])
async def test_the_asgi_health_reports_the_same_checks(hs_env: HsEnv, reads: int) -> None:
    """``/health`` is the same implementation: the same checks, and the hit ratio of the
    process's own reads instead of ``unknown``."""
    cache = hs_env.app.cache
    exporter = Exporter(cache, dsn=hs_env.dsn)
    views = [ScheduledView(p.name, v) for p in hs_env.app.plugins.plugins.values()
             for v in p.views]
    try:
        for i in range(reads):  # nothing cached: every read is a miss
            assert await cache.get(WORK_ORDER.key("acme", work_order_id=10_000 + i)) is None
        async with HttpServer(MetricsApp(exporter, views=views,
                                         rules=hs_env.app.plugins.all_rules())) as server:
            status, served = await asyncio.to_thread(_get, server.url + "/health")
    finally:
        exporter.detach()
    _, cli = await asyncio.to_thread(
        health_json, "--redis-url", hs_env.redis_url, "--dsn", hs_env.dsn, "--plugin", HS)
    assert set(served["checks"]) == set(cli["checks"])
    assert served["checks"]["capture"]["status"] == "healthy"
    for name, c in cli["checks"].items():
        if name != "hit_ratio":
            assert served["checks"][name]["status"] == c["status"], name
    hit_ratio = served["checks"]["hit_ratio"]
    if reads:
        assert hit_ratio == {"status": "warning", "hits": 0, "misses": reads, "ratio": 0.0,
                             "reason": hit_ratio["reason"]}
        assert hit_ratio["reason"].startswith(f"hit ratio 0.00 over {reads} reads")
    else:
        assert hit_ratio["status"] == "healthy"
        assert hit_ratio["reason"] == "0 read(s) counted, too few to judge (under 100)"
    assert status == 200


async def test_a_healthy_deployment_exits_0_on_every_topology(thorbis_redis_url: str
                                                               ) -> None:
    code, report = await asyncio.to_thread(health_json, "--redis-url", thorbis_redis_url)
    assert code == 0
    assert set(report["checks"]) == {"redis", "topology", "eviction", "memory", "hit_ratio",
                                     "queue", "dead_letters"}


async def test_a_capture_slot_is_reported_with_its_lag(hs_env: HsEnv) -> None:
    """Logical capture's slot: named, its WAL status and how far behind it is."""
    from thorbis_cache.postgres.logical import LogicalCapture

    capture = LogicalCapture("healthcheck", hs_env.app.plugins.all_rules(),
                             hs_env.app.plugins.all_views())
    await capture.ensure(hs_env.conn)
    try:
        await hs_env.conn.execute("UPDATE hs.customers SET phone = phone || '0'")
        _, report = await asyncio.to_thread(
            health_json, "--redis-url", hs_env.redis_url, "--dsn", hs_env.dsn, "--plugin", HS)
        check = report["checks"]["capture_slot"]
        slot = check["slots"]["thorbis_healthcheck"]
        assert slot["wal_status"] in ("reserved", "extended")
        assert slot["backlog_bytes"] > 0  # the UPDATE's WAL, not read by any worker
        # No worker reads it: nothing is invalidated, which the operator is told.
        assert check["status"] == "warning", check
        assert check["reason"].startswith("no worker reads slot thorbis_healthcheck"), check
        assert slot["active"] is False
        async with OutboxWorker.from_app(hs_env.app, hs_env.dsn, capture=capture) as worker:
            running = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(worker.drained(), 30)
                _, report = await asyncio.to_thread(
                    health_json, "--redis-url", hs_env.redis_url, "--dsn", hs_env.dsn,
                    "--plugin", HS)
            finally:
                worker.stop()
                await running
        check = report["checks"]["capture_slot"]
        assert check["status"] == "healthy", check
        assert check["slots"]["thorbis_healthcheck"]["active"] is True
        assert "thorbis_healthcheck" in check["reason"]
    finally:
        await capture.drop(hs_env.conn)


@pytest.mark.parametrize(("reading", "reason"), [
    (ProbeResult(redis_up=True, queue_dead_letters=0, postgres_up=False,
                 postgres_error="refused"),
     "the outbox's could not be read (PostgreSQL did not answer)"),
    (ProbeResult(redis_up=False, redis_error="refused", postgres_up=True,
                 outbox_backlog=0, outbox_oldest_seconds=0, outbox_dead_letters=0),
     "the queue's could not be read (Redis did not answer)"),
])
def test_dead_letters_that_could_not_be_read_are_not_none(reading: ProbeResult,
                                                          reason: str) -> None:
    """Found as an operator would: with PostgreSQL (or Redis) down, the check said
    "none", having read the other half only."""
    dead = assess(reading).checks["dead_letters"]
    assert (dead.status, dead.reason) == ("unknown", reason)
