"""The demo (``thorbis-cache demo``): in process on small sizes, and as the console script.

The demo starts its own ephemeral Redis and PostgreSQL, so these tests need the server
binaries (``make servers``) but none of the session fixtures.
"""

from __future__ import annotations

import asyncio
import collections
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from thorbis_cache.demo import (
    DemoOptions,
    DemoResult,
    ZipfSampler,
    generate_customers,
    popularity,
    read_plan,
    run_demo,
)
from thorbis_cache.errors import ConfigurationError

SMALL = DemoOptions(tenants=2, customers=100, reads=2000, concurrency=16)


@pytest.fixture(scope="module")
def demo_run() -> tuple[DemoResult, str]:
    """One in-process run shared by the tests below (it costs a few seconds)."""
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    result = asyncio.run(run_demo(SMALL, console=console))
    return result, out.getvalue()


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
    assert e.customer.name.encode() not in e.raw
    assert e.customer.email.encode() not in e.raw
    assert e.customer.phone.encode() not in e.raw
    assert e.key_id == "k1"
    assert all(c.passed for c in e.checks), e.checks


def test_tampered_and_moved_entries_are_counted_misses(demo_run: tuple[DemoResult, str]) -> None:
    t = demo_run[0].tamper
    assert t.corrupt_reason == "auth_failed"
    assert t.corrupt_delta == 1
    assert t.cross_tenant_corrupt_delta == 1
    assert t.redis_key.startswith("tc:{acme}:demo.customer:")
    assert t.cross_tenant_key.startswith("tc:{globex}:demo.customer:")
    assert all(c.passed for c in t.checks), t.checks


def test_stale_fill_is_rejected_and_fresh_value_follows(demo_run: tuple[DemoResult, str]) -> None:
    r = demo_run[0].race
    assert r.fills_rejected_delta == 1
    assert r.slow_caller_email == r.stale_email != r.updated_email
    assert r.fresh_email == r.updated_email
    assert all(c.passed for c in r.checks), r.checks


def test_report_prints_measured_numbers(demo_run: tuple[DemoResult, str]) -> None:
    result, text = demo_run
    assert result.ok
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


def test_data_and_plan_are_deterministic_by_seed() -> None:
    options = DemoOptions(tenants=3, customers=20, reads=300)
    assert generate_customers(options) == generate_customers(options)
    hot = popularity(options)
    assert read_plan(options, hot) == read_plan(options, popularity(options))
    other = DemoOptions(tenants=3, customers=20, reads=300, seed=8)
    assert generate_customers(other) != generate_customers(options)
    # More reads extend the plan without changing the data set.
    longer = DemoOptions(tenants=3, customers=20, reads=600)
    assert generate_customers(longer) == generate_customers(options)
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
    assert "tc:{acme}:demo.customer:" in out
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
