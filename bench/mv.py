"""Materialized-view benchmark: home_services refresh times by data size, and MV vs cache reads.

Run ``.venv/bin/python bench/mv.py`` (sizes 10k, 100k and 1M invoices), ``--quick`` for
10k only, ``--sizes 10k,100k`` to choose. It starts its own throw-away PostgreSQL and
``redis-server`` (``thorbis_cache.testing.servers``; never a server on the default ports,
both stopped on every exit), applies the home_services plugin's SQL and views through a
``CacheApp`` and the core migrations (for the refresh history), then, for each size:

* **data**: tenants of ``--customers`` customers each (1000: about 3,300 invoices a
  tenant), generated one by one with ``thorbis_home_services.datagen.generate`` and
  COPYed in chunks, until the invoices reach the size; each size adds tenants to the one
  before (a tenant's rows do not depend on the others, so the data of 100k *is* the data
  of 10k plus more tenants); then ``VACUUM (ANALYZE)`` of the ``hs`` tables;
* **refresh**: each of the four views is brought up to date with one untimed plain
  refresh, then refreshed ``--repeat`` times plain and ``CONCURRENTLY`` (ABBA order):
  through ``refresh_view`` (its ``duration_ms``: advisory lock, catalog check, the
  REFRESH *and* a ``count(*)`` of the view, not the history row), and as a bare
  ``REFRESH MATERIALIZED VIEW`` statement timed here, followed by a timed ``count(*)``.
  The sources do not change between refreshes, so a concurrent refresh finds no row to
  write: its figure is the cost of the diff, the floor of a real one;
* **reads**: one customer's summary row straight from the view (``asyncpg``
  ``fetchrow``, the columns of the plugin's loader query) against the same row through
  ``Cache.get_or_load`` with the plugin's loader (hits after a warm pass), and the
  loader itself (the view read plus typing: what a miss costs); same keys, one
  process, interleaved op by op in rotating order, ``--rounds`` rounds. Figures are
  medians across rounds; ratios are medians of the per-round ratios.

The numbers are a report, never an assertion: the script exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import itertools
import json
import os
import platform
import random
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import attrs
from rich.console import Console
from rich.table import Table
from thorbis_home_services import CustomerSummary, datagen, loaders
from thorbis_home_services.schemas import CUSTOMER_SUMMARY

from thorbis_cache.app import CacheApp
from thorbis_cache.cache.crypto import KeyRing
from thorbis_cache.mv.refresh import refresh_view
from thorbis_cache.plugins.declarations import MaterializedView
from thorbis_cache.postgres.catalog import quote_qualified
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.testing.servers import PostgresServer, RedisServer

PLUGIN = "home_services"
DATABASE = "thorbis_bench"
#: Invoices buffered before a COPY (one transaction each): bounds the memory held.
COPY_CHUNK = 100_000
#: The view read: the plugin loader's columns, one customer, by the unique index.
MV_SQL = (
    "SELECT customer_id, first_name, last_name, email, phone, customer_type, "
    "account_status, payment_status, total_work_orders, completed_orders, lifetime_value, "
    "last_service_at, created_at, updated_at "
    "FROM hs.customer_summary WHERE tenant_id = $1 AND customer_id = $2"
)
PG_SETTINGS = ("shared_buffers", "work_mem", "maintenance_work_mem",
               "max_parallel_workers_per_gather", "jit")
SUBJECTS = ("MV fetchrow", "cache get_or_load (hit)", "plugin loader (MV + typing)",
            "Redis GET of the entry")
MV, CACHE, LOADER, RAW = SUBJECTS

Op = Callable[[int], Awaitable[Any]]


@attrs.frozen(slots=True)
class Plan:
    """What one run measures."""

    sizes: tuple[int, ...]
    repeat: int
    rounds: int
    ops: int
    keys: int
    customers: int
    seed: int


FULL = Plan(sizes=(10_000, 100_000, 1_000_000), repeat=3, rounds=3, ops=2000, keys=500,
            customers=1000, seed=0)
QUICK = attrs.evolve(FULL, sizes=(10_000,), rounds=2, ops=600)


def parse_size(text: str) -> int:
    """``10k`` -> 10000, ``1M`` -> 1000000, ``2500`` -> 2500."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if found is None:
        raise argparse.ArgumentTypeError(f"a size is a number with an optional k or M, "
                                         f"got {text!r}")
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[found[2].lower()]
    value = round(float(found[1]) * scale)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a size is at least 1 invoice, got {text!r}")
    return value


def label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark set-up check failed: {what}")


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


# --------------------------------------------------------------------------- data


@attrs.define
class Load:
    """One size's data load: what is in the tables then, and what adding it cost."""

    target: int
    tenants: int
    counts: dict[str, int]
    generate_s: float
    copy_s: float
    vacuum_s: float


@attrs.define
class Dataset:
    """The tenants loaded so far; :meth:`grow` adds tenants until enough invoices."""

    customers: int
    seed: int
    reference: dt.datetime
    tenants: list[str] = attrs.Factory(list)
    counts: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(datagen.TABLES, 0))

    async def grow(self, conn: asyncpg.Connection, invoices: int) -> Load:
        """Generate and COPY whole tenants until the tables hold ``invoices`` invoices."""
        buffered: dict[str, list[tuple[Any, ...]]] = {t: [] for t in datagen.TABLES}
        generate_s = copy_s = 0.0
        while self.counts["invoices"] + len(buffered["invoices"]) < invoices:
            tenant = datagen.tenant_names(len(self.tenants) + 1)[-1]
            t0 = time.perf_counter()
            part = datagen.generate([tenant], self.customers, seed=self.seed,
                                    reference=self.reference)
            generate_s += time.perf_counter() - t0
            for table in datagen.TABLES:
                buffered[table].extend(part.rows(table))
            self.tenants.append(tenant)
            if len(buffered["invoices"]) >= COPY_CHUNK:
                copy_s += await self._copy(conn, buffered)
        if buffered["invoices"]:
            copy_s += await self._copy(conn, buffered)
        t0 = time.perf_counter()
        # What autovacuum would reach soon after a bulk load: statistics, hint bits and
        # the visibility map, so the refreshes do not pay for the load.
        await conn.execute("VACUUM (ANALYZE) " + ", ".join(f"hs.{t}" for t in datagen.TABLES))
        vacuum_s = time.perf_counter() - t0
        return Load(invoices, len(self.tenants), dict(self.counts), generate_s, copy_s,
                    vacuum_s)

    async def _copy(self, conn: asyncpg.Connection,
                    buffered: dict[str, list[tuple[Any, ...]]]) -> float:
        t0 = time.perf_counter()
        async with conn.transaction():
            for table in datagen.TABLES:
                await conn.copy_records_to_table(
                    table, records=buffered[table], columns=datagen.COLUMNS[table],
                    schema_name="hs",
                )
        for table in datagen.TABLES:
            self.counts[table] += len(buffered[table])
            buffered[table].clear()
        return time.perf_counter() - t0


# --------------------------------------------------------------------------- refresh


@attrs.define
class ViewTimes:
    """One view's refresh figures at one size (milliseconds, one entry per repeat).

    ``api`` and ``stmt`` map ``concurrently`` to the ``refresh_view`` durations and to the
    bare REFRESH statement's.
    """

    view: str
    rows: int = 0
    size_bytes: int = 0
    api: dict[bool, list[float]] = attrs.Factory(lambda: {False: [], True: []})
    stmt: dict[bool, list[float]] = attrs.Factory(lambda: {False: [], True: []})
    count_ms: list[float] = attrs.Factory(list)

    def summary(self) -> dict[str, Any]:
        med = statistics.median
        return {
            "view": self.view, "rows": self.rows, "size_bytes": self.size_bytes,
            "refresh_view_plain_ms": med(self.api[False]),
            "refresh_view_concurrent_ms": med(self.api[True]),
            "refresh_view_ratio": med(self.api[True]) / med(self.api[False]),
            "stmt_plain_ms": med(self.stmt[False]),
            "stmt_concurrent_ms": med(self.stmt[True]),
            "stmt_ratio": med(self.stmt[True]) / med(self.stmt[False]),
            "count_ms": med(self.count_ms),
            "runs": {"refresh_view_plain": self.api[False],
                     "refresh_view_concurrent": self.api[True],
                     "stmt_plain": self.stmt[False], "stmt_concurrent": self.stmt[True],
                     "count": self.count_ms},
        }


def with_mode(view: MaterializedView, concurrently: bool) -> MaterializedView:
    """``view`` with its policy's ``concurrently`` forced (the rest of the policy kept)."""
    return attrs.evolve(view, refresh=attrs.evolve(view.refresh, concurrently=concurrently))


async def refresh_times(
    conn: asyncpg.Connection, view: MaterializedView, repeat: int, console: Console
) -> ViewTimes:
    """Bring ``view`` up to date (untimed), then time ``repeat`` plain and concurrent
    refreshes, ABBA, each through ``refresh_view`` and as a bare statement."""
    quoted = quote_qualified(view.name)
    times = ViewTimes(view.name)
    warm = await refresh_view(conn, PLUGIN, with_mode(view, False))
    _expect(warm.ok, f"warm-up refresh of {view.name}: {warm.error}")
    for rnd in range(repeat):
        for concurrently in (False, True) if rnd % 2 == 0 else (True, False):
            out = await refresh_view(conn, PLUGIN, with_mode(view, concurrently))
            _expect(out.ok and out.concurrently == concurrently,
                    f"refresh of {view.name} (concurrently={concurrently}): "
                    f"{out.outcome} {out.error or ''}")
            times.api[concurrently].append(out.duration_ms)
            mode = "CONCURRENTLY " if concurrently else ""
            t0 = time.perf_counter()
            await conn.execute(f"REFRESH MATERIALIZED VIEW {mode}{quoted}")
            times.stmt[concurrently].append(_ms_since(t0))
            t0 = time.perf_counter()
            times.rows = int(await conn.fetchval(f"SELECT count(*) FROM {quoted}"))  # noqa: S608
            times.count_ms.append(_ms_since(t0))
            _expect(times.rows == out.rows, f"{view.name}: row count changed without a write")
    times.size_bytes = int(await conn.fetchval(
        "SELECT pg_total_relation_size(to_regclass($1))", view.name))
    s = times.summary()
    console.print(f"[dim]  {view.name}: {times.rows:,} rows, refresh_view plain "
                  f"{s['refresh_view_plain_ms']:,.0f} ms / concurrent "
                  f"{s['refresh_view_concurrent_ms']:,.0f} ms[/]")
    return times


# --------------------------------------------------------------------------- reads


def percentile(samples: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (any order)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


@attrs.define
class Reads:
    """Per-subject, per-round p50/p99 in µs; ``keys`` distinct customers read."""

    keys: int
    ops: int
    p50: dict[str, list[float]] = attrs.Factory(lambda: {s: [] for s in SUBJECTS})
    p99: dict[str, list[float]] = attrs.Factory(lambda: {s: [] for s in SUBJECTS})

    def ratio(self, q: str, subject: str, anchor: str = CACHE) -> float:
        """Median over rounds of ``subject``'s percentile ``q`` / ``anchor``'s."""
        by = self.p50 if q == "p50" else self.p99
        return statistics.median(a / b for a, b in zip(by[subject], by[anchor]))

    def summary(self) -> dict[str, Any]:
        return {
            "keys": self.keys, "ops_per_round": self.ops,
            "subjects": {s: {"p50_us": statistics.median(self.p50[s]),
                             "p99_us": statistics.median(self.p99[s]),
                             "p50_ratio_to_cache": self.ratio("p50", s),
                             "p99_ratio_to_cache": self.ratio("p99", s),
                             "rounds_p50": self.p50[s], "rounds_p99": self.p99[s]}
                         for s in SUBJECTS},
        }


async def read_latency(
    plan: Plan, conn: asyncpg.Connection, app: CacheApp, data: Dataset
) -> Reads:
    """The view read, the cache hit and the loader over the same keys, interleaved."""
    rng = random.Random(f"{plan.seed}:reads:{len(data.tenants)}")
    picked: set[tuple[str, int]] = set()
    total = len(data.tenants) * data.customers
    while len(picked) < min(plan.keys, total):
        picked.add((rng.choice(data.tenants), rng.randint(1, data.customers)))
    picks = sorted(picked)
    rng.shuffle(picks)
    keys = [CUSTOMER_SUMMARY.key(t, customer_id=c) for t, c in picks]
    cache = app.cache
    loads = 0

    async def mv(i: int) -> Any:
        tenant, customer_id = picks[i]
        return await conn.fetchrow(MV_SQL, tenant, customer_id)

    async def cached(i: int) -> CustomerSummary:
        tenant, customer_id = picks[i]

        async def loader() -> CustomerSummary:
            nonlocal loads
            loads += 1
            return await loaders.customer_summary(conn.fetch, tenant, customer_id)

        return await cache.get_or_load(keys[i], loader)

    async def loaded(i: int) -> CustomerSummary:
        tenant, customer_id = picks[i]
        return await loaders.customer_summary(conn.fetch, tenant, customer_id)

    names = [cache.redis_key(k) for k in keys]

    async def raw(i: int) -> bytes | None:
        return await cache.store.get(names[i])

    ops: dict[str, Op] = {MV: mv, CACHE: cached, LOADER: loaded, RAW: raw}
    # Keys a smaller size already read are still cached (same tenants, same rows).
    cached_before = sum(v is not None for v in await asyncio.gather(*map(raw, range(len(picks)))))
    # Warm pass: every key is loaded once and cached; the same row three ways.
    for i in range(len(picks)):
        value = await cached(i)
        row = await mv(i)
        _expect(row is not None and value == await loaded(i)
                and value.lifetime_value == row["lifetime_value"],
                f"the cached summary of {picks[i]} is the view's row")
    _expect(loads == len(picks) - cached_before,
            f"{loads} loads in the warm pass of {len(picks)} keys ({cached_before} cached)")
    _expect(all(await asyncio.gather(*map(raw, range(len(picks))))), "every entry stored")
    loads = 0
    orders = list(itertools.permutations(SUBJECTS))
    reads = Reads(len(picks), plan.ops)
    clock = time.perf_counter_ns
    for i in range(min(300, plan.ops)):  # warm-up: statement caches, pools, branch paths
        for subject in SUBJECTS:
            await ops[subject](i % len(picks))
    for rnd in range(plan.rounds):
        samples: dict[str, list[int]] = {s: [0] * plan.ops for s in SUBJECTS}
        gc.collect()
        for i in range(plan.ops):
            k = (i + rnd * 7) % len(picks)
            for subject in orders[(i + rnd) % len(orders)]:
                t0 = clock()
                await ops[subject](k)
                samples[subject][i] = clock() - t0
        for subject in SUBJECTS:
            reads.p50[subject].append(percentile(samples[subject], 50) / 1000)
            reads.p99[subject].append(percentile(samples[subject], 99) / 1000)
    _expect(loads == 0, f"{loads} cache misses while measuring hits (TTL is 15 minutes)")
    return reads


# --------------------------------------------------------------------------- report


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
            timeout=10, check=False, cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _redis_version(server: RedisServer) -> str:
    info = server.command("INFO", "server")
    text = info.decode() if isinstance(info, bytes) else str(info)
    found = re.search(r"redis_version:(\S+)", text)
    return found[1] if found else "unknown"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def render_data(console: Console, loads: Sequence[Load]) -> None:
    table = Table(title="Data loaded (cumulative per size; seconds are for the tenants "
                        "added at that size)", title_justify="left")
    table.add_column("size")
    for header in ("tenants", "customers", "work orders", "invoices", "inspections",
                   "generate s", "COPY s", "VACUUM ANALYZE s"):
        table.add_column(header, justify="right")
    for load in loads:
        c = load.counts
        table.add_row(label(load.target), f"{load.tenants:,}", f"{c['customers']:,}",
                      f"{c['work_orders']:,}", f"{c['invoices']:,}",
                      f"{c['quality_control_inspections']:,}", f"{load.generate_s:.1f}",
                      f"{load.copy_s:.1f}", f"{load.vacuum_s:.1f}")
    console.print(table)


def render_refresh(console: Console, results: Sequence[tuple[Load, list[ViewTimes]]],
                   repeat: int) -> None:
    table = Table(
        title=(f"Refresh time, ms (median of {repeat}); ratio = concurrent / plain. "
               "refresh_view = lock + catalog check + REFRESH + count(*) of the view; "
               "REFRESH = the bare statement alone; count(*) timed after it"),
        title_justify="left",
    )
    table.add_column("size")
    table.add_column("view")
    for header in ("rows", "MV size", "refresh_view plain", "refresh_view conc.", "ratio",
                   "REFRESH plain", "REFRESH conc.", "ratio", "count(*)"):
        table.add_column(header, justify="right")
    for n, (load, views) in enumerate(results):
        if n:
            table.add_section()
        for times in views:
            s = times.summary()
            table.add_row(
                label(load.target), times.view, f"{times.rows:,}", _bytes(times.size_bytes),
                f"{s['refresh_view_plain_ms']:,.1f}", f"{s['refresh_view_concurrent_ms']:,.1f}",
                f"{s['refresh_view_ratio']:.2f}", f"{s['stmt_plain_ms']:,.1f}",
                f"{s['stmt_concurrent_ms']:,.1f}", f"{s['stmt_ratio']:.2f}",
                f"{s['count_ms']:,.1f}",
            )
    console.print(table)
    console.print("[dim]The sources are unchanged between refreshes: a concurrent refresh "
                  "computes the view and diffs it against the old rows but writes none "
                  "(a real one also writes the changed rows).[/]")


def render_reads(console: Console, results: Sequence[tuple[Load, Reads]], plan: Plan) -> None:
    table = Table(
        title=(f"Read one customer's summary row (µs per call, sequential; median of "
               f"{plan.rounds} rounds of {plan.ops} calls each; ratio = subject / cache hit)"),
        title_justify="left",
    )
    table.add_column("size")
    table.add_column("subject")
    for header in ("keys", "p50 µs", "p99 µs", "p50 ratio", "p99 ratio"):
        table.add_column(header, justify="right")
    for n, (load, reads) in enumerate(results):
        if n:
            table.add_section()
        for subject in SUBJECTS:
            table.add_row(
                label(load.target), subject, f"{reads.keys:,}",
                f"{statistics.median(reads.p50[subject]):.0f}",
                f"{statistics.median(reads.p99[subject]):.0f}",
                f"{reads.ratio('p50', subject):.2f}", f"{reads.ratio('p99', subject):.2f}",
            )
    console.print(table)
    console.print(f"[dim]{MV}: asyncpg fetchrow of the loader's columns by (tenant_id, "
                  f"customer_id), one connection. {CACHE}: Cache.get_or_load of "
                  f"hs.customer_summary (sensitive: AES-GCM, msgpack, cattrs) with the "
                  f"plugin's loader, all hits. {LOADER}: loaders.customer_summary, the "
                  f"query a miss runs plus the typed row. {RAW}: the cache's own RedisStore "
                  f"GET of the stored bytes (the hit minus decrypt and decode).[/]")


# --------------------------------------------------------------------------- main


async def machine(conn: asyncpg.Connection, redis_server: RedisServer) -> dict[str, Any]:
    settings = {name: await conn.fetchval(f"SHOW {name}") for name in PG_SETTINGS}
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "postgres": await conn.fetchval("SHOW server_version"),
        "postgres_settings": settings,
        "redis_server": _redis_version(redis_server),
    }


async def run(plan: Plan, postgres: PostgresServer, redis_server: RedisServer,
              console: Console) -> dict[str, Any]:
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    dsn = postgres.dsn(DATABASE)
    app = CacheApp(redis_server.url, keyring=KeyRing.generate(), postgres_dsn=dsn)
    conn: asyncpg.Connection | None = None
    try:
        await app.start(plugins=[PLUGIN], apply_sql=True)
        await migrate(dsn)  # the refresh history and audit tables
        views = app.plugins.all_views()
        _expect(len(views) == 4, f"home_services declares 4 views, got {len(views)}")
        conn = await asyncpg.connect(dsn)
        facts = await machine(conn, redis_server)
        la = facts["load_avg_at_start"]
        pg = facts["postgres_settings"]
        console.print(f"$ {facts['command']}")
        console.print(
            f"{facts['cpu_count']} cores | load {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} | "
            f"PostgreSQL {facts['postgres']} ({', '.join(f'{k}={v}' for k, v in pg.items())})"
            f" | redis-server {facts['redis_server']} | python {facts['python']} | "
            f"commit {facts['commit']}"
        )
        data = Dataset(plan.customers, plan.seed, dt.datetime.now(dt.UTC))
        loads: list[Load] = []
        refreshes: list[tuple[Load, list[ViewTimes]]] = []
        reads: list[tuple[Load, Reads]] = []
        started = time.perf_counter()
        for size in plan.sizes:
            console.print(f"[bold]{label(size)} invoices[/] "
                          f"[dim]({time.perf_counter() - started:.0f} s)[/]")
            load = await data.grow(conn, size)
            loads.append(load)
            console.print(f"[dim]  loaded {load.counts['invoices']:,} invoices, "
                          f"{load.tenants} tenants: generate {load.generate_s:.1f} s, COPY "
                          f"{load.copy_s:.1f} s, VACUUM ANALYZE {load.vacuum_s:.1f} s[/]")
            step = time.perf_counter()
            refreshes.append((load, [await refresh_times(conn, v, plan.repeat, console)
                                     for v in views]))
            console.print(f"[dim]  refreshes {time.perf_counter() - step:.0f} s[/]")
            step = time.perf_counter()
            reads.append((load, await read_latency(plan, conn, app, data)))
            console.print(f"[dim]  reads {time.perf_counter() - step:.0f} s[/]")
        console.print()
        render_data(console, loads)
        render_refresh(console, refreshes, plan.repeat)
        render_reads(console, reads, plan)
        facts["load_avg_at_end"] = os.getloadavg()
        facts["seconds"] = time.perf_counter() - started
        le = facts["load_avg_at_end"]
        console.print(f"load average at end {le[0]:.2f} {le[1]:.2f} {le[2]:.2f}; "
                      f"{facts['seconds']:.0f} s after the servers were up")
        return {
            "machine": facts,
            "plan": attrs.asdict(plan),
            "loads": [attrs.asdict(load) for load in loads],
            "refresh": [{"size": load.target, "views": [t.summary() for t in views]}
                        for load, views in refreshes],
            "reads": [{"size": load.target, **r.summary()} for load, r in reads],
        }
    finally:
        if conn is not None:
            await conn.close()
        await app.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k invoices only, fewer reads")
    parser.add_argument("--sizes", type=lambda s: tuple(parse_size(x) for x in s.split(",")),
                        help="invoice counts, e.g. 10k,100k,1M (the default)")
    parser.add_argument("--repeat", type=int, help="refreshes per view and mode (default 3)")
    parser.add_argument("--rounds", type=int, help="read rounds (default 3, --quick 2)")
    parser.add_argument("--customers", type=int, help="customers per tenant (default 1000)")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a PostgreSQL server setting (repeatable), e.g. work_mem=64MB")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides = {"sizes": tuple(sorted(set(args.sizes))) if args.sizes else None,
                 "repeat": args.repeat, "rounds": args.rounds, "customers": args.customers}
    plan = attrs.evolve(plan, **{k: v for k, v in overrides.items() if v})
    settings = dict(s.split("=", 1) for s in args.pg_setting)
    console = Console(width=max(Console().width, 160))
    with PostgresServer(settings=settings) as postgres, RedisServer() as redis_server:
        report = asyncio.run(run(plan, postgres, redis_server, console))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
