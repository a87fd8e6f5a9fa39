"""The demo's closing scene: every installed vertical, for several tenants, end to end.

Each tenant of this scene runs all the verticals at once (a group with a home-services
branch, a garage and a restaurant), so their keys, tags and tables share a tenant and
must not collide. For every vertical that ships a
:class:`~thorbis_cache.demo.protocol.VerticalDemo`:

1. its data set is written in PostgreSQL (the capture triggers record every row in the
   outbox);
2. the materialized-view scheduler ticks once: views whose smart policy sees enough
   changes refresh themselves; the views it leaves stale after this bulk load are
   refreshed by hand, as an operator does with ``thorbis-cache refresh``;
3. reads go through the cache the way a host reads (patterns, ``get_or_load`` with the
   plugin's loaders), concurrently from a cold cache (hits and misses counted on the
   vertical's own schemas, reads per second); then the same reads are replayed one at a
   time: every lookup must hit, and their latency is what one caller sees;
4. changes are committed in PostgreSQL, the outbox worker applies them, and each change
   is verified through the cache; then the scheduler ticks again;
5. reads under writes: the same kind of reads again while changes keep committing and a
   running worker applies them. Hits are counted apart for entries that mirror a
   materialized view (``KeySchema.mirrors``: only the view's refresh makes them stale,
   so base-table writes must not touch them) and for the others; the worker's batches
   must not have invalidated a single view-backed key or tag.

The summary table has one line per vertical: hit ratio, latency, invalidations, refreshes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import attrs

from thorbis_cache.app import CacheApp
from thorbis_cache.demo.data import DemoOptions
from thorbis_cache.demo.protocol import DemoChange, VerticalDemo, find_demo
from thorbis_cache.demo.results import Check, LatencySummary, VerticalResult, VerticalsResult
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.mv.refresh import (
    RefreshOutcome,
    load_state,
    pending_changes,
    refresh_and_invalidate,
)
from thorbis_cache.mv.scheduler import MvScheduler
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers

__all__ = ["CHANGES_PER_TENANT", "verticals_scene"]

#: Changes committed per vertical and tenant.
CHANGES_PER_TENANT = 3
#: Changes committed per vertical while the reads-under-writes phase runs.
CHANGES_UNDER_READS = 30


def _namespace_of_key(body: str) -> str:
    # '{tenant}:auto.vehicle_history:...' -> 'auto'
    return body.split("}:", 1)[1].split(".", 1)[0]


async def _reads(app: CacheApp, pool: asyncpg.Pool, demo: VerticalDemo, tenants: Sequence[str],
                 count: int, concurrency: int, seed: int, *,
                 one_at_a_time: bool = False) -> tuple[list[int], Counter[str]]:
    """``count`` reads by ``concurrency`` readers, each with its own seeded RNG (which
    picks the tenant and what to read) and a fixed share of the reads, so the same
    arguments make the same reads whatever the interleaving. With ``one_at_a_time`` the
    readers run one after the other: the same reads, replayed sequentially.

    :returns: the latencies (ns) and what was read.
    """
    latencies: list[int] = []
    mix: Counter[str] = Counter()

    async def reader(index: int) -> None:
        rng = random.Random(f"{seed}:{demo.plugin}:reader:{index}")
        for _ in range(count // concurrency + (index < count % concurrency)):
            tenant = rng.choice(tenants)
            t0 = time.perf_counter_ns()
            mix[await demo.read(app, pool, tenant, rng)] += 1
            latencies.append(time.perf_counter_ns() - t0)

    if one_at_a_time:
        for index in range(concurrency):
            await reader(index)
    else:
        await asyncio.gather(*(reader(i) for i in range(concurrency)))
    return latencies, mix


def _lookups(app: CacheApp, schemas: Sequence[str]) -> tuple[int, int]:
    """Hits and misses counted so far on ``schemas``."""
    counters = [app.cache.metrics.for_schema(name) for name in schemas]
    return sum(c.hits for c in counters), sum(c.misses for c in counters)


@attrs.frozen(slots=True)
class _ReadPhase:
    """One vertical's reads: the concurrent pass from a cold cache, then its replay."""

    mix: Counter[str]
    hits: int
    misses: int
    reads_per_s: float
    latencies: list[int]
    replay_hits: int
    replay_misses: int


async def _read_phase(app: CacheApp, pool: asyncpg.Pool, demo: VerticalDemo,
                      tenants: Sequence[str], options: DemoOptions) -> _ReadPhase:
    """The concurrent pass, counted on the vertical's schemas; then the same reads again,
    one at a time: every entry is cached now, so each must be a hit, and the latency is
    one caller's (no 31 others queued on the same event loop)."""
    schemas = [s.name for s in app.plugins.plugins[demo.plugin].schemas]
    hits0, misses0 = _lookups(app, schemas)
    t0 = time.perf_counter()
    _, mix = await _reads(app, pool, demo, tenants, options.vertical_reads,
                          options.concurrency, options.seed)
    elapsed = time.perf_counter() - t0
    hits1, misses1 = _lookups(app, schemas)
    latencies, _ = await _reads(app, pool, demo, tenants, options.vertical_reads,
                                options.concurrency, options.seed, one_at_a_time=True)
    hits2, misses2 = _lookups(app, schemas)
    return _ReadPhase(mix, hits1 - hits0, misses1 - misses0, options.vertical_reads / elapsed,
                      latencies, hits2 - hits1, misses2 - misses1)


@attrs.frozen(slots=True)
class _UnderWrites:
    """One vertical's reads while its changes commit and a running worker applies them."""

    reads: int
    changes: int
    verified: int
    view_hits: int
    view_misses: int
    other_hits: int
    other_misses: int
    mirror_invalidations: tuple[str, ...]


def _mirrors(app: CacheApp, demo: VerticalDemo) -> tuple[list[str], list[str], set[str]]:
    """The vertical's view-backed schema names, its other schema names, and the tags
    only its view-backed schemas carry."""
    schemas = app.plugins.plugins[demo.plugin].schemas
    mirrors = [s for s in schemas if s.mirrors is not None]
    others = [s for s in schemas if s.mirrors is None]
    other_tags = {t for s in others for t in s.tags}
    return ([s.name for s in mirrors], [s.name for s in others],
            {t for s in mirrors for t in s.tags} - other_tags)


async def _under_writes(app: CacheApp, pool: asyncpg.Pool, dsn: str, demo: VerticalDemo,
                        tenants: Sequence[str], options: DemoOptions) -> _UnderWrites:
    """Concurrent reads while :data:`CHANGES_UNDER_READS` changes commit, applied by a
    worker that runs throughout; hits and misses counted on view-backed and other
    schemas; the worker's batches searched for a view-backed key or tag."""
    mirror_schemas, other_schemas, mirror_tags = _mirrors(app, demo)
    batches: list[Any] = []
    stop = asyncio.Event()
    rng = random.Random(f"{options.seed}:{demo.plugin}:under-writes")
    changes: list[DemoChange] = []
    reads = options.vertical_reads // 2

    async def apply(worker: OutboxWorker) -> None:
        while True:
            result = await worker.run_once()
            batches.append(result)
            if not result.claimed:
                if stop.is_set():
                    return
                await asyncio.sleep(0.02)

    async def write() -> None:
        for _ in range(CHANGES_UNDER_READS):
            changes.append(await demo.change(app, pool, rng.choice(list(tenants)), rng))
            await asyncio.sleep(0.01)

    # Warm first with the very reads measured below, so that a miss while the writes
    # run is an invalidation, not a first read (nor a view refresh's doing: the
    # scheduler's last tick may have dropped every entry of a view).
    await _reads(app, pool, demo, tenants, reads, options.concurrency, options.seed)
    view0, other0 = _lookups(app, mirror_schemas), _lookups(app, other_schemas)
    async with OutboxWorker.from_app(app, dsn) as worker:
        applier = asyncio.create_task(apply(worker), name="demo-under-writes-worker")
        try:
            await asyncio.gather(
                write(),
                _reads(app, pool, demo, tenants, reads, options.concurrency, options.seed),
            )
        finally:
            stop.set()
            await applier
    view1, other1 = _lookups(app, mirror_schemas), _lookups(app, other_schemas)
    verified = [await c.verify() for c in changes].count(None)
    touched = [k for b in batches for k in b.keys
               if k.split("}:", 1)[1].split(":", 1)[0] in mirror_schemas]
    touched += [f"tag {tag}" for b in batches for _, tag in b.tags if tag in mirror_tags]
    return _UnderWrites(reads, len(changes), verified, view1[0] - view0[0],
                        view1[1] - view0[1], other1[0] - other0[0], other1[1] - other0[1],
                        tuple(touched))


def _ratio(hits: int, misses: int) -> str:
    return f"{hits / (hits + misses):.0%}" if hits + misses else "n/a"


async def _refresh_stale(app: CacheApp, pool: asyncpg.Pool,
                         scheduler: MvScheduler) -> list[RefreshOutcome]:
    """Refresh by hand every view with changes its scheduler left pending."""
    outcomes = []
    async with pool.acquire() as conn:
        for sv in scheduler.views:
            state = await load_state(conn, sv.name)
            if await pending_changes(conn, sv.view, state):
                outcomes.append(await refresh_and_invalidate(app, conn, sv.plugin, sv.view))
    return outcomes


async def verticals_scene(app: CacheApp, pool: asyncpg.Pool, dsn: str, options: DemoOptions,
                          on_step: Callable[[str], None] = lambda _: None) -> VerticalsResult:
    """Run every installed vertical's part for the scene's tenants (see the module).

    :param app: the started app, with every vertical loaded and its SQL applied.
    :param pool: connections to the demo database.
    :param dsn: the same database, for the worker and the scheduler.
    :param options: the demo's options (tenants, reads per vertical, seed, concurrency).
    :param on_step: told what the scene is doing (for a status line).
    """
    t0 = time.perf_counter()
    tenants = options.vertical_tenant_names()
    demos = [d for d in (find_demo(name) for name in app.plugins.plugins) if d is not None]
    rows: dict[str, int] = {}
    on_step("writing every vertical's data set in PostgreSQL...")
    async with pool.acquire() as conn:
        # What `thorbis-cache db init` does: core schema, capture triggers of every rule.
        await migrate(conn)
        await install_triggers(conn, app.plugins.all_rules(), app.plugins.all_views())
        for demo in demos:
            rows[demo.plugin] = await demo.populate(conn, tenants, seed=options.seed, scale=1)
    # The bulk load's rows are changes like any other: the worker applies them (nothing
    # is cached for these tenants yet) and counts them for the views' smart refresh.
    async with OutboxWorker.from_app(app, dsn) as worker:
        await worker.drain()

    on_step("refreshing materialized views (scheduler tick, then what it left stale)...")
    refreshed: list[RefreshOutcome] = []
    async with MvScheduler.from_app(app, dsn) as scheduler:
        refreshed += await scheduler.tick()
        refreshed += await _refresh_stale(app, pool, scheduler)

        phases: dict[str, _ReadPhase] = {}
        for demo in demos:
            on_step(f"reading {demo.title} through the cache...")
            phases[demo.plugin] = await _read_phase(app, pool, demo, tenants, options)

        on_step("committing changes in PostgreSQL, then running the outbox worker...")
        changes: dict[str, list[DemoChange]] = {d.plugin: [] for d in demos}
        rng = random.Random(f"{options.seed}:changes")
        for demo in demos:
            for tenant in tenants:
                for _ in range(CHANGES_PER_TENANT):
                    changes[demo.plugin].append(await demo.change(app, pool, tenant, rng))
        async with OutboxWorker.from_app(app, dsn) as worker:
            batches = await worker.drain()
        keys = Counter(_namespace_of_key(k) for b in batches for k in b.keys)
        tags = Counter(tag.split(".", 1)[0] for b in batches for _, tag in b.tags)
        verified = {d.plugin: [await c.verify() for c in changes[d.plugin]] for d in demos}
        refreshed += await scheduler.tick()

        under: dict[str, _UnderWrites] = {}
        for demo in demos:
            on_step(f"reading {demo.title} while changes commit and the worker runs...")
            under[demo.plugin] = await _under_writes(app, pool, dsn, demo, tenants, options)

    results = []
    for demo in demos:
        namespace = app.plugins.plugins[demo.plugin].info.namespace
        phase = phases[demo.plugin]
        views = {v.name for v in app.plugins.plugins[demo.plugin].views}
        mine = [o for o in refreshed if o.view in views]
        by_trigger = Counter(o.trigger for o in mine if o.ok)
        failed = [o for o in mine if o.outcome == "failed"]
        problems = [p for p in verified[demo.plugin] if p is not None]
        n = len(changes[demo.plugin])
        checks = (
            Check(f"{demo.title}: {n - len(problems)}/{n} committed changes seen through the "
                  "cache after the worker ran", not problems, "; ".join(problems[:3])),
            Check(f"{demo.title}: every view refreshed ({len(views)} view(s), "
                  f"{sum(by_trigger.values())} refresh(es))",
                  not failed and {o.view for o in mine if o.ok} == views,
                  "; ".join(str(o.error) for o in failed[:2])),
            Check(f"{demo.title}: the same {options.vertical_reads:,} reads replayed: "
                  f"{phase.replay_hits:,} cache lookups, {phase.replay_misses} missed",
                  phase.replay_hits > 0 and phase.replay_misses == 0),
            Check(f"{demo.title}: the worker invalidated {keys[namespace]} {namespace!r} key(s) "
                  f"and {tags[namespace]} tag(s) for its changes",
                  keys[namespace] + tags[namespace] > 0),
            _under_writes_check(demo, under[demo.plugin]),
        )
        results.append(VerticalResult(
            demo.plugin, demo.title, rows[demo.plugin], options.vertical_reads,
            phase.reads_per_s, phase.hits, phase.misses, LatencySummary.of(phase.latencies),
            tuple(phase.mix.most_common()), n, n - len(problems),
            keys[namespace], tags[namespace], tuple(sorted(by_trigger.items())), len(failed),
            checks, *_under_writes_figures(under[demo.plugin]),
        ))
    return VerticalsResult(tuple(tenants), tuple(results), time.perf_counter() - t0)


def _under_writes_check(demo: VerticalDemo, u: _UnderWrites) -> Check:
    return Check(
        f"{demo.title}: {u.reads:,} reads under {u.changes} writes: view-backed entries hit "
        f"{_ratio(u.view_hits, u.view_misses)}, others {_ratio(u.other_hits, u.other_misses)}; "
        f"no view-backed key or tag invalidated by a base-table change; "
        f"{u.verified}/{u.changes} changes seen",
        not u.mirror_invalidations and u.verified == u.changes,
        "; ".join(u.mirror_invalidations[:3]),
    )


def _under_writes_figures(u: _UnderWrites) -> tuple[int, int, int, int, int]:
    return u.changes, u.view_hits, u.view_misses, u.other_hits, u.other_misses
