"""``thorbis-cache invalidate`` run as a user runs it: a subprocess of the installed
console script against real Redis (every topology for the tag and cascade paths)."""

from __future__ import annotations

import decimal
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from thorbis_home_services.models import TechnicianPerformance, TechnicianRole
from thorbis_home_services.schemas import TECHNICIAN_PERFORMANCE

from thorbis_cache import Cache, KeyRing
from thorbis_cache.plugins.manager import PluginManager

CLI = str(Path(sys.executable).with_name("thorbis-cache"))
TAG = "hs.tech_metrics"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THORBIS_")}
    return subprocess.run([CLI, "invalidate", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def perf(n: int) -> TechnicianPerformance:
    return TechnicianPerformance(n, "Ada", "Lovelace", TechnicianRole.TECHNICIAN, 10, 9,
                                 decimal.Decimal("0.9"), 1.5, decimal.Decimal("1200.00"),
                                 4.8, 7)


async def open_cache(url: str) -> Cache:
    manager = PluginManager()
    await manager.load(["home_services"])
    return Cache.from_url(url, manager.registry, keyring=KeyRing.generate())


@pytest.fixture
async def cache(thorbis_redis_url: str) -> AsyncIterator[Cache]:
    async with await open_cache(thorbis_redis_url) as c:
        yield c


@pytest.fixture
async def standalone(thorbis_standalone_redis_url: str) -> AsyncIterator[Cache]:
    async with await open_cache(thorbis_standalone_redis_url) as c:
        yield c



async def test_a_key(standalone: Cache, thorbis_standalone_redis_url: str) -> None:
    one = TECHNICIAN_PERFORMANCE.key("acme", technician_id=1)
    two = TECHNICIAN_PERFORMANCE.key("acme", technician_id=2)
    await standalone.set(one, perf(1))
    await standalone.set(two, perf(2))
    args = ("--tenant", "acme", "hs.technician_performance", "technician_id=1",
            "--redis-url", thorbis_standalone_redis_url, "-p", "home_services")

    done = run(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("tenant acme: key tc:{acme}:hs.technician_performance:1: "
                                   "1 key(s) removed")
    assert await standalone.get(one) is None
    assert await standalone.get(two) == perf(2)

    again = run(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "tenant": "acme", "key": "tc:{acme}:hs.technician_performance:1", "tags": {},
        "cascade": False, "removed": 0}


async def test_a_tag_on_every_topology(cache: Cache, thorbis_redis_url: str) -> None:
    for tenant, n in (("acme", 1), ("acme", 2), ("globex", 1)):
        await cache.set(TECHNICIAN_PERFORMANCE.key(tenant, technician_id=n), perf(n))

    done = run("--tenant", "acme", "--tag", TAG, "--json", "--redis-url", thorbis_redis_url,
               "-p", "home_services")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tags"] == {TAG: 2}
    assert report["removed"] == 2
    assert await cache.get(TECHNICIAN_PERFORMANCE.key("acme", technician_id=1)) is None
    assert await cache.get(TECHNICIAN_PERFORMANCE.key("acme", technician_id=2)) is None
    # Another tenant's keys under the same tag stay.
    assert await cache.get(TECHNICIAN_PERFORMANCE.key("globex", technician_id=1)) == perf(1)


async def test_a_cascade_on_every_topology(cache: Cache, thorbis_redis_url: str) -> None:
    base = TECHNICIAN_PERFORMANCE.key("acme", technician_id=1)
    derived = TECHNICIAN_PERFORMANCE.key("acme", technician_id=2)
    further = TECHNICIAN_PERFORMANCE.key("acme", technician_id=3)
    for n, key in enumerate((base, derived, further), 1):
        await cache.set(key, perf(n))
    await cache.depend(derived, on=base)
    await cache.depend(further, on=derived)
    args = ("--tenant", "acme", "hs.technician_performance", "technician_id=1",
            "--redis-url", thorbis_redis_url, "-p", "home_services")

    plain = run(*args)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.rstrip().endswith(": 1 key(s) removed")
    assert await cache.get(derived) == perf(2)

    await cache.set(base, perf(1))
    done = run(*args, "--cascade")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("in cascade: 3 key(s) removed")
    for key in (base, derived, further):
        assert await cache.get(key) is None


def test_bad_input_is_one_line_and_exit_2(thorbis_standalone_redis_url: str) -> None:
    base = ("--redis-url", thorbis_standalone_redis_url, "-p", "home_services")
    cases = {
        "no tenant": ((*base, "--tag", TAG), "invalidate needs --tenant"),
        "both": ((*base, "-t", "acme", "--tag", TAG, "hs.technician_performance",
                  "technician_id=1"), "not both and not neither"),
        "neither": ((*base, "-t", "acme"), "not both and not neither"),
        "unknown tag": ((*base, "-t", "acme", "--tag", "hs.tech_metric"),
                        "no loaded key schema carries tag 'hs.tech_metric'; did you mean "
                        "hs.tech_metrics"),
        "unknown schema": ((*base, "-t", "acme", "hs.technician_perf", "technician_id=1"),
                           "unknown key schema 'hs.technician_perf'; did you mean "
                           "hs.technician_performance"),
        "bad value": ((*base, "-t", "acme", "hs.technician_performance", "technician_id=x"),
                      "key schema 'hs.technician_performance', parameter 'technician_id': "
                      "'x'"),
        "not a pair": ((*base, "-t", "acme", "hs.technician_performance", "1"),
                       "'1' is not NAME=VALUE"),
        "bad tenant": ((*base, "-t", "ACME", "--tag", TAG), "invalid tenant id 'ACME'"),
    }
    for name, (args, expected) in cases.items():
        got = run(*args)
        assert got.returncode == 64, (name, got.stdout, got.stderr)
        assert expected in got.stderr, (name, got.stderr)
        assert len(got.stderr.strip().splitlines()) == 1, (name, got.stderr)


def test_unreachable_redis_is_one_line(thorbis_standalone_redis_url: str) -> None:
    got = run("-t", "acme", "--tag", TAG, "--redis-url", "redis://127.0.0.1:1/0",
              "-p", "home_services")
    assert got.returncode == 1
    assert "127.0.0.1:1" in got.stderr
    assert "Traceback" not in got.stderr
