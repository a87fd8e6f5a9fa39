"""The demo (``thorbis-cache demo``): in process on small sizes, and as the console script.

The demo starts its own ephemeral Redis and PostgreSQL, so these tests need the server
binaries (``make servers``) but none of the session fixtures. It runs on the
home_services plugin (installed with the core by ``make``); without it, it must refuse
in one line before starting anything.
"""

from __future__ import annotations

import asyncio
import collections
import io
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console
from thorbis_home_services import plugin as hs_plugin
from thorbis_home_services.predict import predict_next_service
from thorbis_home_services.views import ALL_VIEWS

import thorbis_cache.demo
from thorbis_cache.demo import (
    DemoOptions,
    DemoResult,
    ZipfSampler,
    popularity,
    read_plan,
    run_demo,
)
from thorbis_cache.demo.verticals_scene import CHANGES_PER_TENANT
from thorbis_cache.errors import ConfigurationError

SMALL = DemoOptions(tenants=2, customers=100, reads=2000, concurrency=16, vertical_reads=600)


@pytest.fixture(scope="module")
def demo_run() -> tuple[DemoResult, str]:
    """One in-process run shared by the tests below (it costs a few seconds)."""
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    result = asyncio.run(run_demo(SMALL, console=console))
    return result, out.getvalue()


# --------------------------------------------------------------------------- plugin and data


def test_plugin_data_is_loaded_and_views_refreshed(demo_run: tuple[DemoResult, str]) -> None:
    d = demo_run[0].data
    assert d.tenants == ("acme", "globex")
    assert d.rows["customers"] == SMALL.tenants * SMALL.customers
    assert d.rows["work_orders"] > d.rows["customers"]
    assert d.views == tuple(v.name for v in ALL_VIEWS)


def test_plugin_is_loaded_through_cache_app(demo_run: tuple[DemoResult, str]) -> None:
    p = demo_run[0].plugin
    assert (p.name, p.namespace, p.hook_api_version) == ("home_services", "hs", 1)
    assert p.distribution == "thorbis-home-services"
    assert p.version
    assert p.declared == {
        "schemas": len(hs_plugin.register_key_schemas()),
        "patterns": len(hs_plugin.register_cache_patterns()),
        "views": len(hs_plugin.register_materialized_views()),
        "rules": len(hs_plugin.register_invalidation_rules()),
        "warmers": len(hs_plugin.register_warmers()),
        "permissions": len(hs_plugin.register_permissions()),
    }
    assert all(c.passed for c in p.checks), p.checks


def test_plugin_patterns_answer_from_the_cache(demo_run: tuple[DemoResult, str]) -> None:
    p = demo_run[0].plugin
    assert p.warmed > len(p.board) > 0
    assert len(p.board) <= p.board_limit
    scores = [row.score for row in p.board]
    assert scores == sorted(scores, reverse=True)
    for row in p.board:
        assert row.order is not None
        assert row.order.id == row.work_order_id
        assert row.order.status is row.status
        assert row.status.is_open
    assert len(p.history) >= 2
    assert p.prediction == predict_next_service(at for _, at in p.history)


# --------------------------------------------------------------------------- workload


def test_workload_is_served_mostly_from_the_cache(demo_run: tuple[DemoResult, str]) -> None:
    w = demo_run[0].workload
    assert w.reads == SMALL.reads
    assert w.hits + w.misses + w.coalesced == w.reads
    assert w.hit_ratio > 0
    assert w.hits > 0
    assert w.hit_latency.p50_ns is not None
    assert w.db_queries < w.reads
    assert w.queries_saved == w.reads - w.db_queries


def test_each_distinct_key_is_loaded_exactly_once(demo_run: tuple[DemoResult, str]) -> None:
    # 16 concurrent readers over a Zipf plan hit the same hot keys at once: without
    # single-flight some keys would be loaded twice or more.
    w = demo_run[0].workload
    assert w.db_queries == w.distinct_keys
    assert w.misses == w.db_queries  # every loader run is one query, counted per call
    assert w.metrics["loads"] == w.db_queries
    assert w.metrics["hits"] + w.metrics["misses"] == w.reads


def test_warm_pass_and_anchor_were_measured(demo_run: tuple[DemoResult, str]) -> None:
    w = demo_run[0].workload
    assert w.warm_get_latency.count == w.raw_get_latency.count > 0
    assert w.warm_get_latency.p50_ns is not None
    assert w.raw_get_latency.p50_ns is not None


# --------------------------------------------------------------------------- scenes


def test_stored_entry_is_encrypted(demo_run: tuple[DemoResult, str]) -> None:
    e = demo_run[0].encryption
    assert e.raw[:2] == b"TC"
    assert e.redis_key.startswith("tc:{acme}:hs.customer_summary:")
    assert e.summary.last_name.encode() not in e.raw
    assert e.summary.email.encode() not in e.raw
    assert e.summary.phone.encode() not in e.raw
    assert e.key_id == "k1"
    assert all(c.passed for c in e.checks), e.checks


def test_tampered_and_moved_entries_are_counted_misses(demo_run: tuple[DemoResult, str]) -> None:
    t = demo_run[0].tamper
    assert t.corrupt_reason == "auth_failed"
    assert t.corrupt_delta == 1
    assert t.cross_tenant_corrupt_delta == 1
    assert t.redis_key.startswith("tc:{acme}:hs.customer_summary:")
    assert t.cross_tenant_key.startswith("tc:{globex}:hs.customer_summary:")
    assert all(c.passed for c in t.checks), t.checks


def test_stale_fill_is_rejected_and_fresh_value_follows(demo_run: tuple[DemoResult, str]) -> None:
    r = demo_run[0].race
    assert r.redis_key == f"tc:{{acme}}:hs.work_order:{r.work_order_id}"
    assert r.fills_rejected_delta == 1
    assert r.slow_caller_priority == r.stale_priority != r.updated_priority
    assert r.fresh_priority == r.updated_priority
    assert all(c.passed for c in r.checks), r.checks


def test_committed_update_is_invalidated_by_the_worker(demo_run: tuple[DemoResult, str]) -> None:
    o = demo_run[0].outbox
    assert "hs.customers" in o.tables
    assert o.redis_key == f"tc:{{acme}}:hs.customer:{o.customer_id}"
    assert o.summary_key == f"tc:{{acme}}:hs.customer_summary:{o.customer_id}"
    assert o.old_status != o.new_status
    assert o.new_status in ("vip", "active")
    assert o.gone_ms is not None
    assert o.gone_ms >= 0
    assert o.reloaded_status == o.new_status
    assert o.audit_records >= 1
    assert len(o.checks) == 7
    assert all(c.passed for c in o.checks), o.checks
    text = demo_run[1]
    assert f"An UPDATE in PostgreSQL invalidates the cache (customer {o.customer_id})" in text
    assert f"commit → gone {o.gone_ms:.1f} ms" in text


def test_every_installed_vertical_runs_end_to_end(demo_run: tuple[DemoResult, str]) -> None:
    result, text = demo_run
    v = result.verticals
    assert v.tenants == ("acme-group", "globex-group")
    assert [r.plugin for r in v.verticals] == ["home_services", "automotive", "restaurant"]
    for r in v.verticals:
        assert r.rows > 0
        assert r.changes == CHANGES_PER_TENANT * len(v.tenants)
        assert r.verified == r.changes
        assert r.hits > 0
        assert r.misses > 0
        assert r.keys_invalidated + r.tags_invalidated > 0
        assert r.failed_refreshes == 0
        assert sum(n for _, n in r.refreshes) >= 2
        assert r.latency.count > 0
        assert f"{r.hit_ratio:.1%}" in text
    assert all(c.passed for c in v.checks)
    assert "Every vertical, end to end" in text


def test_report_prints_measured_numbers(demo_run: tuple[DemoResult, str]) -> None:
    result, text = demo_run
    assert result.ok
    assert f"{result.data.rows['work_orders']:,} work orders" in text
    p = result.plugin
    assert f"Plugin home_services {p.version} (thorbis-home-services)" in text
    assert f"{p.declared['schemas']} schemas · {p.declared['patterns']} patterns" in text
    assert f"hs.high_priority_work_orders(acme, limit={p.board_limit})" in text
    for row in p.board:
        assert f"  {row.work_order_id}  " in text
    assert p.prediction is not None
    assert f"due {p.prediction.due_at:%Y-%m-%d}" in text
    assert f"{result.workload.hit_ratio:.1%}" in text
    assert f"{result.workload.queries_saved} saved" in text
    assert result.encryption.redis_key in text
    assert f"{len(result.checks)}/{len(result.checks)} checks passed" in text
    assert result.redis_address in text
    assert result.postgres_address in text


# --------------------------------------------------------------------------- data and plan


def test_zipf_sampler_matches_its_distribution() -> None:
    n, s, draws = 50, 1.1, 40_000
    sampler = ZipfSampler(n, s)
    rng = random.Random(1)
    counts = collections.Counter(sampler.draw(rng) for _ in range(draws))
    assert set(counts) <= set(range(n))
    total = sum(1 / k**s for k in range(1, n + 1))
    for rank in (0, 1, 9):
        expected = draws / (rank + 1) ** s / total
        # Binomial: 5 standard deviations, so a correct sampler fails ~never.
        sigma = (expected * (1 - expected / draws)) ** 0.5
        assert abs(counts[rank] - expected) < 5 * sigma, (rank, counts[rank], expected)


def test_zipf_zero_is_uniform() -> None:
    sampler = ZipfSampler(4, 0.0)
    rng = random.Random(2)
    counts = collections.Counter(sampler.draw(rng) for _ in range(8000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(abs(c - 2000) < 250 for c in counts.values())


def test_plan_is_deterministic_by_seed() -> None:
    options = DemoOptions(tenants=3, customers=20, reads=300)
    hot = popularity(options)
    assert hot == popularity(options)
    assert sorted(hot["acme"]) == list(range(1, 21))  # the ids datagen generates
    assert read_plan(options, hot) == read_plan(options, popularity(options))
    other = DemoOptions(tenants=3, customers=20, reads=300, seed=8)
    assert popularity(other) != hot
    assert read_plan(other, popularity(other)) != read_plan(options, hot)
    # More reads extend the plan without changing the popularity order.
    longer = DemoOptions(tenants=3, customers=20, reads=600)
    assert popularity(longer) == hot
    assert read_plan(longer, hot)[:300] == read_plan(options, hot)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="--tenants"):
        DemoOptions(tenants=1)
    with pytest.raises(ConfigurationError, match="--zipf"):
        DemoOptions(zipf=-0.5)
    assert DemoOptions(tenants=12).tenant_names()[-2:] == ["tenant-011", "tenant-012"]


# --------------------------------------------------------------------------- console script


def _console_script() -> Path:
    script = Path(sys.executable).with_name("thorbis-cache")
    if not script.exists():
        pytest.fail(f"console script {script} is missing: is the project installed?")
    return script


def test_console_script_runs_the_demo() -> None:
    done = subprocess.run(
        [str(_console_script()), "demo", "--tenants", "2", "--customers", "50", "--reads", "500"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Redis" in out
    assert "PostgreSQL" in out
    assert "127.0.0.1:" in out
    assert "hit ratio" in out
    assert "Plugin home_services" in out
    assert "hs.high_priority_work_orders(acme" in out
    assert "tc:{acme}:hs.customer_summary:" in out
    assert "An UPDATE in PostgreSQL invalidates the cache" in out
    assert "commit → gone" in out
    assert "checks passed" in out
    assert "✗" not in out
    assert "Traceback" not in done.stderr


def test_console_script_reports_errors_in_one_line() -> None:
    done = subprocess.run(
        [str(_console_script()), "demo", "--tenants", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert "--tenants" in lines[0]


# --------------------------------------------------------------------------- without the plugin

_INSTALL = "pip install -e plugins/home_services"


def test_missing_plugin_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(thorbis_cache.demo, "entry_points", lambda **_: [])
    with pytest.raises(ConfigurationError) as caught:
        asyncio.run(run_demo(SMALL))
    message = str(caught.value)
    assert "\n" not in message
    assert "'home_services'" in message
    assert _INSTALL in message


# The console script as it runs when the plugin's distribution is absent: its entry
# point is not listed and its package cannot be imported.
_WITHOUT_PLUGIN = textwrap.dedent(
    """
    import importlib.metadata as metadata
    import sys

    sys.modules["thorbis_home_services"] = None  # importing it raises ImportError
    listed = metadata.entry_points

    def entry_points(**params):
        found = listed(**params)
        if params.get("group") == "thorbis_cache.plugins":
            return [ep for ep in found if ep.name != "home_services"]
        return found

    metadata.entry_points = entry_points
    from thorbis_cache.cli import main

    sys.argv = ["thorbis-cache", "demo", "--tenants", "2"]
    main()
    """
)


def test_console_script_without_the_plugin_fails_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PLUGIN],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert "home_services" in lines[0]
    assert _INSTALL in lines[0]
