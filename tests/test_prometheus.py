"""A real Prometheus (Debian's ``prometheus``, found or installed like redis-server)
scrapes the outbox worker and a host application after a workload; its HTTP API must
return the counts the processes made. The alert rules are loaded by it, checked by
``promtool check rules`` and unit-tested by ``promtool test rules``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from core_testing import HsEnv, wait_until
from test_observability import (
    ALERTS,
    _get,
    _work_order_ids,
    alert_names,
    exposed,
    read_work_orders,
    start_worker,
)

from thorbis_cache.observability import Exporter, HttpServer, MetricsApp
from thorbis_cache.testing.binaries import PrometheusBinaries
from thorbis_cache.testing.servers import PrometheusServer, free_port

ALERTS_TEST = ALERTS.with_name("alerts_test.yml")


def _promtool(binaries: PrometheusBinaries, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries.promtool), *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=ALERTS.parent)


def test_promtool_checks_and_unit_tests_the_alert_rules(
    prometheus_binaries: PrometheusBinaries,
) -> None:
    checked = _promtool(prometheus_binaries, "check", "rules", ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = alert_names()
    assert len(names) == 12
    assert f"SUCCESS: {len(names)} rules found" in checked.stdout
    tested = _promtool(prometheus_binaries, "test", "rules", ALERTS_TEST.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # Every alert is exercised by the unit tests.
    tests = ALERTS_TEST.read_text()
    assert all(f"alertname: {name}" in tests for name in names)


@contextlib.contextmanager
def _prometheus(binaries: PrometheusBinaries, targets: dict[str, list[str]],
                rules: list[Path]) -> Iterator[PrometheusServer]:
    server = PrometheusServer(targets, rule_files=rules, binaries=binaries)
    try:
        yield server
    finally:
        server.stop()


async def test_prometheus_scrapes_the_worker_and_a_host_app(
    hs_env: HsEnv, prometheus_binaries: PrometheusBinaries, tmp_path: Path,
) -> None:
    cache = hs_env.app.cache
    pending = await hs_env.conn.fetchval("SELECT count(*) FROM thorbis.outbox")
    exporter = Exporter(cache, dsn=hs_env.dsn)
    worker_port = free_port()
    worker = start_worker(hs_env, worker_port, "--mv-tick", "0.5")
    try:
        async with HttpServer(MetricsApp(exporter)) as host:
            targets = {"thorbis-worker": [f"127.0.0.1:{worker_port}"],
                       "thorbis-host": [f"127.0.0.1:{host.port}"]}
            with _prometheus(prometheus_binaries, targets, [ALERTS]) as prom:
                await asyncio.to_thread(prom.start)
                await _workload_and_checks(hs_env, exporter, prom, pending,
                                           f"http://127.0.0.1:{worker_port}/metrics")
    finally:
        exporter.detach()
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 30)
        assert worker.stderr is not None
        assert code == 0, worker.stderr.read()


async def _workload_and_checks(env: HsEnv, exporter: Exporter, prom: PrometheusServer,
                               pending: int, worker_url: str) -> None:
    cache = env.app.cache

    async def outbox_empty() -> bool:
        return await env.conn.fetchval("SELECT count(*) FROM thorbis.outbox") == 0

    # The generated rows' changes first: they would invalidate what the reads cache.
    await wait_until("the worker applies the generated changes", outbox_empty)
    reads = await read_work_orders(env, "acme", 3)
    reads += await read_work_orders(env, "globex", 2)
    first = (await _work_order_ids(env, "acme"))[0]
    await env.conn.execute("UPDATE hs.work_orders SET description = 'metrics test' "
                           "WHERE tenant_id = 'acme' AND id = $1", first)
    await wait_until("the worker applies the update", outbox_empty)
    reads += await read_work_orders(env, "acme", 1)  # the updated one is a miss again
    hits = cache.metrics.value("hits", schema="hs.work_order")
    misses = cache.metrics.value("misses", schema="hs.work_order")
    assert (hits, misses) == (6 + 3 + 2, 3 + 3 + 1)

    def scraped(expr: str, want: float) -> bool:
        return prom.value(expr) == want

    host, worker = 'job="thorbis-host"', 'job="thorbis-worker"'
    expectations = {
        f'up{{{host}}}': 1, f'up{{{worker}}}': 1,
        f'sum(thorbis_cache_hits_total{{{host},schema="hs.work_order"}})': hits,
        f'sum(thorbis_cache_misses_total{{{host},schema="hs.work_order"}})': misses,
        f'thorbis_cache_operation_seconds_count{{{host},schema="hs.work_order",'
        f'operation="get_or_load"}}': reads,
        f'sum(thorbis_cache_tenant_operations_total{{{host}}})': reads,
        f'thorbis_cache_worker_changes_total{{{worker}}}': pending + 1,
        f'thorbis_cache_worker_commit_to_invalidated_seconds_count{{{worker}}}': pending + 1,
        f'thorbis_cache_outbox_backlog{{{worker}}}': 0,
        f'thorbis_cache_outbox_dead_letters{{{worker}}}': 0,
        f'thorbis_cache_redis_up{{{worker}}}': 1,
        f'thorbis_cache_redis_up{{{host}}}': 1,
        f'thorbis_cache_postgres_up{{{host}}}': 1,
    }
    for expr, want in expectations.items():
        await wait_until(f"prometheus has {expr} == {want} (now {prom.value(expr)})",
                         lambda expr=expr, want=want: asyncio.to_thread(scraped, expr, want))
    # Labels stay bounded: at most 20 tenants and other.
    assert len(prom.query(f"thorbis_cache_tenant_operations_total{{{host}}}")) <= 21

    # The worker's own figures, as its endpoint serves them now, are what Prometheus has.
    direct = exposed((await asyncio.to_thread(_get, worker_url))[2])
    keys = 'thorbis_cache_invalidations_total{kind="keys",source="worker"}'
    assert direct[keys] > 0
    await wait_until("prometheus has the worker's invalidated keys", lambda: asyncio.to_thread(
        scraped, f'thorbis_cache_invalidations_total{{{worker},source="worker",kind="keys"}}',
        direct[keys]))
    batches = prom.value(f"thorbis_cache_worker_batches_total{{{worker}}}")
    assert batches is not None
    assert batches >= 1

    # The alert rules are loaded and evaluate without error against the real series;
    # with both servers up none of the outage alerts fires.
    async def rules_evaluated() -> bool:
        groups = (await asyncio.to_thread(prom.api, "rules"))["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == len(alert_names()) and all(
            r["health"] == "ok" and r.get("lastEvaluation", "").startswith("2")
            for r in rules)

    await wait_until("prometheus evaluated every alert rule", rules_evaluated)
    alerts = (await asyncio.to_thread(prom.api, "alerts"))["alerts"]
    names = {a["labels"]["alertname"] for a in alerts}
    assert not names & {"ThorbisRedisUnreachable", "ThorbisPostgresUnreachable",
                        "ThorbisWorkerLagging"}, alerts
