"""``/metrics`` and ``/health`` against real Redis and PostgreSQL: what the exporter
serves after a workload, the health checks and their statuses, the ASGI routes, and
``thorbis-cache serve`` driven as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import pytest
from core_testing import HsEnv, wait_until
from prometheus_client.parser import text_string_to_metric_families
from thorbis_home_services import loaders
from thorbis_home_services.schemas import WORK_ORDER

from thorbis_cache import Cache, KeySchema, SchemaRegistry
from thorbis_cache.errors import RedisUnavailableError
from thorbis_cache.invalidation.apply import CacheInvalidator
from thorbis_cache.invalidation.queue import InvalidationJob, InvalidationQueue
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.observability import (
    OTHER,
    Exporter,
    HealthThresholds,
    HttpServer,
    MeteredMvScheduler,
    MetricsApp,
)
from thorbis_cache.testing.servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"


def _get(url: str) -> tuple[int, str, str]:
    """GET ``url``: status, content type, body (an HTTP error is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 -- http://127.0.0.1
            return r.status, r.headers["content-type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


def exposed(text: str) -> dict[str, float]:
    """Every sample of a text exposition: ``name{labels}`` -> value, and the names a
    query can use (``_total``, ``_bucket``/``_count``/``_sum``) for families with no
    sample yet, as NaN."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        for suffix in suffixes.get(family.type, [""]):
            samples.setdefault(family.name + suffix, float("nan"))
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
            samples.setdefault(s.name, s.value)
    return samples


def families(text: str) -> set[tuple[str, str]]:
    """``(name, type)`` of every metric family of a text exposition."""
    return {(f.name, f.type) for f in text_string_to_metric_families(text)}


def documented() -> set[tuple[str, str]]:
    """``(name, type)`` of every metric in docs/operations.md's table."""
    return set(re.findall(r"^\| `(thorbis_cache_[a-z_]+)` \| (counter|gauge|histogram) \|",
                          OPERATIONS_DOC.read_text(), re.MULTILINE))


def alert_names() -> set[str]:
    """The names of the alert rules in deploy/prometheus/alerts.yml."""
    return {line.split(":", 1)[1].strip() for line in ALERTS.read_text().splitlines()
            if line.strip().startswith("- alert:")}


def alert_metrics() -> set[str]:
    """The thorbis metric names the alert rules use."""
    return set(re.findall(r"\bthorbis_cache_[a-z_]+", ALERTS.read_text()))


async def _work_order_ids(env: HsEnv, tenant: str) -> list[int]:
    return [r["id"] for r in await env.conn.fetch(
        "SELECT id FROM hs.work_orders WHERE tenant_id = $1 ORDER BY id LIMIT 3", tenant)]


async def read_work_orders(env: HsEnv, tenant: str, rounds: int) -> int:
    """get_or_load every work order of ``tenant`` (3) ``rounds`` times; the reads made."""
    ids = await _work_order_ids(env, tenant)
    for _ in range(rounds):
        for i in ids:
            await env.app.cache.get_or_load(
                WORK_ORDER.key(tenant, work_order_id=i),
                lambda i=i: loaders.work_order(env.conn.fetch, tenant, i))
    return rounds * len(ids)


async def test_the_exporter_serves_the_workload_and_every_metric_the_alerts_use(
    hs_env: HsEnv,
) -> None:
    cache = hs_env.app.cache
    pending = await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox")
    exporter = Exporter(cache, dsn=hs_env.dsn, top_tenants=1)
    assert cache.observer is exporter.operations
    worker = OutboxWorker.from_app(hs_env.app, hs_env.dsn)
    queue = InvalidationQueue(cache.store, cache.settings.prefix)
    handler = exporter.add_queue(queue, CacheInvalidator(cache))
    scheduler = MeteredMvScheduler.from_app(hs_env.app, hs_env.dsn)
    exporter.add_worker(worker)
    exporter.add_views(scheduler.refresh_metrics)
    # Every view's failures are exported from 0 before any refresh: a counter born at 1
    # makes no increase, and its first failure would raise no alert.
    failed = {s.labels["view"]: s.value for m in scheduler.refresh_metrics.collect()
              for s in m.samples if s.labels.get("outcome") == "failed"}
    assert failed == {view.name: 0 for view in scheduler.views}
    try:
        await worker.drain()
        await scheduler.tick()
        reads = await read_work_orders(hs_env, "acme", 3)
        reads += await read_work_orders(hs_env, "globex", 1)
        ids = await _work_order_ids(hs_env, "acme")
        await queue.enqueue(InvalidationJob("acme", keys=(cache.redis_key(
            WORK_ORDER.key("acme", work_order_id=ids[0])),), cascade=True))
        assert await queue.run_once(handler) == 1
        async with HttpServer(MetricsApp(exporter)) as server:
            status, content_type, text = await asyncio.to_thread(_get, server.url + "/metrics")
    finally:
        await scheduler.aclose()
        await worker.aclose()
        exporter.detach()
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    got = exposed(text)
    assert alert_metrics() <= set(got), alert_metrics() - set(got)
    # docs/operations.md lists every metric served, and only those.
    assert families(text) == documented(), families(text) ^ documented()
    wo = 'schema="hs.work_order"'
    assert got[f"thorbis_cache_misses_total{{{wo}}}"] == 6  # 3 acme + 3 globex
    assert got[f"thorbis_cache_hits_total{{{wo}}}"] == 6  # acme's 2nd and 3rd rounds
    assert got[f"thorbis_cache_loads_total{{{wo}}}"] == 6
    assert got[f'thorbis_cache_operation_seconds_count{{operation="get_or_load",{wo}}}'] == reads
    # Bounded tenants: the one label (acme, the busiest) and other; every read counted.
    assert got['thorbis_cache_tenant_operations_total{tenant="acme"}'] == 0  # labelled now
    assert got[f'thorbis_cache_tenant_operations_total{{tenant="{OTHER}"}}'] == reads
    assert 'tenant="globex"' not in text
    assert got["thorbis_cache_worker_changes_total"] == pending
    assert got["thorbis_cache_worker_commit_to_invalidated_seconds_count"] == pending
    assert got["thorbis_cache_worker_batches_total"] >= 1
    assert got['thorbis_cache_invalidations_total{kind="keys",source="worker"}'] > 0
    assert got['thorbis_cache_invalidations_total{kind="keys",source="queue"}'] == 1
    assert got['thorbis_cache_invalidations_total{kind="cascades",source="queue"}'] == 1
    assert got['thorbis_cache_queue_jobs_total{outcome="processed"}'] == 1
    assert got["thorbis_cache_queue_depth"] == 0
    assert got["thorbis_cache_outbox_backlog"] == 0
    assert got["thorbis_cache_outbox_dead_letters"] == 0
    assert got["thorbis_cache_redis_up"] == 1
    assert got["thorbis_cache_postgres_up"] == 1
    refreshed = scheduler.refresh_metrics.attempts
    for (view, outcome), count in refreshed.items():
        assert got[f'thorbis_cache_mv_refreshes_total{{outcome="{outcome}",view="{view}"}}'] \
            == count
    # Detached, the read path calls nothing again.
    assert cache.observer is None


async def test_health_says_what_is_wrong_and_answers_503_when_unhealthy(
    hs_env: HsEnv,
) -> None:
    cache = hs_env.app.cache
    # The outbox holds the generated rows: a warning with the figures.
    exporter = Exporter(cache, dsn=hs_env.dsn, operations=False,
                        thresholds=HealthThresholds(lag_warning=0.0))
    await hs_env.conn.execute(
        "INSERT INTO thorbis.outbox_dead_letters (outbox_id, reason) VALUES (1, 'test')")
    async with HttpServer(MetricsApp(exporter)) as server:
        status, content_type, body = await asyncio.to_thread(_get, server.url + "/health")
    assert (status, content_type) == (200, "application/json")
    report = json.loads(body)
    assert report["status"] == "warning"
    checks = report["checks"]
    assert checks["redis"]["status"] == "healthy"
    assert checks["redis"]["reason"].startswith("PING in ")
    assert checks["redis"]["latency_ms"] > 0
    assert checks["postgres"] == {"status": "healthy", "reason": "answered"}
    assert checks["outbox"]["status"] == "warning"
    assert checks["outbox"]["backlog"] > 0
    assert checks["dead_letters"] == {
        "status": "warning", "outbox_dead_letters": 1, "queue_dead_letters": 0,
        "reason": "1 dead letter(s) in the outbox (thorbis-cache outbox-deadletters list)"}

    # Neither server answers: unhealthy, 503, each check naming why.
    nowhere = free_port()
    down = Cache.from_url(f"redis://127.0.0.1:{nowhere}/0", SchemaRegistry())
    try:
        bad = Exporter(down, dsn=f"postgresql://nobody@127.0.0.1:{nowhere}/none",
                       operations=False, probe_timeout=3.0)
        async with HttpServer(MetricsApp(bad)) as server:
            status, _, body = await asyncio.to_thread(_get, server.url + "/health")
            metrics = await asyncio.to_thread(_get, server.url + "/metrics")
    finally:
        await down.aclose()
    assert status == 503
    report = json.loads(body)
    assert report["status"] == "unhealthy"
    assert report["checks"]["redis"]["status"] == "unhealthy"
    assert report["checks"]["redis"]["reason"].startswith("not answering PING: ")
    assert report["checks"]["postgres"]["status"] == "unhealthy"
    assert report["checks"]["postgres"]["reason"].startswith("not answering: ")
    got = exposed(metrics[2])
    assert got["thorbis_cache_redis_up"] == 0
    assert got["thorbis_cache_postgres_up"] == 0
    assert "thorbis_cache_outbox_backlog" not in got


async def test_the_asgi_app_routes_under_a_mount_prefix(
    thorbis_standalone_redis_url: str,
) -> None:
    async with Cache.from_url(thorbis_standalone_redis_url, SchemaRegistry()) as cache:
        app = MetricsApp(Exporter(cache, operations=False))
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        async def call(method: str, path: str, root: str = "") -> tuple[int, bytes]:
            sent.clear()
            await app({"type": "http", "method": method, "path": path, "root_path": root,
                       "headers": []}, receive, send)
            return sent[0]["status"], sent[1]["body"]

        status, body = await call("GET", "/ops/metrics", "/ops")
        assert status == 200
        assert b"thorbis_cache_redis_up 1.0" in body
        assert (await call("GET", "/ops/health/", "/ops"))[0] == 200
        assert await call("HEAD", "/metrics") == (200, b"")
        assert (await call("POST", "/metrics"))[0] == 405
        assert await call("GET", "/nope") == (404, b"not found: try /metrics or /health\n")


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "thorbis_cache.cli", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})


async def test_serve_runs_until_sigterm_and_refuses_a_taken_port(hs_env: HsEnv) -> None:
    port = free_port()
    proc = _serve("--metrics-port", str(port), "--redis-url", hs_env.redis_url,
                  "--dsn", hs_env.dsn)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line == f"serving /metrics and /health on http://127.0.0.1:{port}; " \
                       "Ctrl-C or SIGTERM stops\n"
        status, _, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health")
        assert status == 200, body
        assert json.loads(body)["checks"]["outbox"]["backlog"] > 0
        _, _, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        got = exposed(text)
        assert got["thorbis_cache_outbox_backlog"] == await hs_env.conn.fetchval(
            "SELECT count(*) FROM thorbis.outbox")

        # The port is taken: one line naming it, exit 1.
        second = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "thorbis_cache.cli", "serve", "--metrics-port", str(port),
            "--redis-url", hs_env.redis_url], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.startswith(f"error: cannot serve metrics on 127.0.0.1:{port}: ")
        assert second.stderr.count("\n") == 1, second.stderr
        bad = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "thorbis_cache.cli", "serve", "--metrics-port", "0",
            "--redis-url", hs_env.redis_url, "--prefix", "No Prefix"],
            capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1
        assert "key prefix 'No Prefix' must be 1-16 of a-z" in bad.stderr
        assert bad.stderr.count("\n") == 1, bad.stderr

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    assert proc.stdout.read() == "metrics endpoint stopped\n"


def start_worker(env: HsEnv, port: int, *options: str) -> subprocess.Popen[str]:
    """``thorbis-cache worker --metrics-port PORT`` on ``env`` (home_services)."""
    return subprocess.Popen(
        [sys.executable, "-m", "thorbis_cache.cli", "worker", "--dsn", env.dsn,
         "--redis-url", env.redis_url, "--plugin", "home_services",
         "--metrics-port", str(port), *(options or ("--no-mv",))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def test_the_worker_serves_its_metrics_with_metrics_port(hs_env: HsEnv) -> None:
    pending = await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox")
    port = free_port()
    proc = start_worker(hs_env, port)
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        async def applied() -> bool:
            try:
                text = (await asyncio.to_thread(_get, url))[2]
            except OSError:
                return False
            return exposed(text).get("thorbis_cache_worker_changes_total") == pending

        await wait_until("the worker's endpoint counts the backlog applied", applied)
        # Its /health reports the views its scheduler refreshes (home_services has some).
        health = json.loads((await asyncio.to_thread(
            _get, f"http://127.0.0.1:{port}/health"))[2])
        assert "views" in health["checks"], health
        assert health["checks"]["views"]["status"] != "unknown", health["checks"]["views"]
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stderr is not None
    assert code == 0, proc.stderr.read()
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(url)  # closed with the worker


@attrs.frozen
class Note:
    text: str


async def test_operations_that_raise_are_counted_by_error_class_and_timed() -> None:
    """A loader's own error counts as ``other``; Redis gone counts as
    ``RedisUnavailableError``; both are observed in the latency histogram too, and a hit
    is observed without an error."""
    schema = KeySchema("t.note", Note, params={"id": int}, ttl=60)
    registry = SchemaRegistry()
    registry.register(schema, owner="test")
    server = RedisServer().start()
    try:
        async with Cache.from_url(server.url, registry) as cache:
            exporter = Exporter(cache)
            try:
                async def broken() -> Note:
                    raise ValueError("the database said no")

                with pytest.raises(ValueError, match="said no"):
                    await cache.get_or_load(schema.key("acme", id=1), broken)
                await cache.set(schema.key("acme", id=2), Note("x"))
                assert await cache.get(schema.key("acme", id=2)) == Note("x")
                server.stop()
                with pytest.raises(RedisUnavailableError):
                    await cache.get(schema.key("acme", id=2))
                samples = exposed((await exporter.render()).decode())
            finally:
                exporter.detach()
    finally:
        server.stop()
    errors = "thorbis_cache_operation_errors_total"
    assert samples[f'{errors}{{error="other",operation="get_or_load",schema="t.note"}}'] == 1
    assert samples[
        f'{errors}{{error="RedisUnavailableError",operation="get",schema="t.note"}}'] == 1
    count = "thorbis_cache_operation_seconds_count"
    assert samples[f'{count}{{operation="get",schema="t.note"}}'] == 2  # a hit, a failure
    assert samples[f'{count}{{operation="get_or_load",schema="t.note"}}'] == 1
    # Every operation is counted once over the tenant labels (acme gets its own label
    # at this first scrape, and counts from there).
    assert sum(v for k, v in samples.items()
               if k.startswith("thorbis_cache_tenant_operations_total{")) == 3

