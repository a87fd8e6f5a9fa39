"""High availability on private servers: what hosts see when Redis goes away and returns.

    .venv/bin/python bench/ha.py                          # every scenario, about a minute
    .venv/bin/python bench/ha.py --quick                  # 4 repetitions, about 25 s
    .venv/bin/python bench/ha.py --scenario restart --repeat 12 --json ha.json
    .venv/bin/python bench/ha.py --readers 0              # the worker alone, no read load
    .venv/bin/python bench/ha.py --signal term --downtime 1 --batch-size 500 --log

Scenarios (``SCENARIOS``: name -> async function; each starts its own servers):

``restart``
    A ``redis-server`` with the AOF on (``appendfsync always``) and a PostgreSQL with the
    home_services plugin (``db init``: schema, capture triggers). An
    :class:`~thorbis_cache.invalidation.worker.OutboxWorker` runs in this process, as do
    ``--readers`` (16) tasks reading random customers through ``hash.get_or_load`` (degrading to the
    loader while Redis is down, as a host does). Per repetition: 1,000 customers (4
    tenants) are cached; Redis is killed (``kill -9``, or SIGTERM with ``--signal term``);
    ``--writers`` (4) connections commit one UPDATE per customer (a new phone and a new
    account status, so each change names a key and its tenant's list tag); after the
    downtime (1, 2, 3, 4 s in turn) Redis is restarted from its AOF, with every entry it
    held -- all of them stale now. Measured from **accept** (the first PONG of a PING
    sent every millisecond) to **gone** (the last stale entry deleted or replaced; an
    entry is stale while its encrypted phone field is the one read before the kill, so
    entries refilled by the readers do not count), both seen by a watcher process of its
    own (this one is busy), to about a millisecond: median and max, PASS/MISS against
    250 ms. Beside it: the readers' stale reads (reads started after accept that
    returned the old phone) and the end of the last one, the worker's probes, and the
    attempts counted on outbox rows during the outage (must be 0). First, once: how
    long the worker takes to apply 1,000 pending changes with Redis up (the floor).

    Everything shares the machine (2 cores here): the readers and the worker share one
    event loop, so the readers slow the worker down; ``--readers 0`` shows the worker
    alone, as ``thorbis-cache worker`` runs (a process of its own).

``failover``, ``wait``, ``resurrection``
    Sentinel and replicated Cluster: the unavailability window after the master is
    killed, the cost of ``WAIT`` after invalidations, and acknowledged invalidations
    lost by a failover then replayed (``bench/ha_failover.py`` describes each).

It is a report, not a test: no assertion, exit status 0 whatever the numbers (see
``bench/README.md``). Add a scenario by writing ``async def name(options) -> Outcome``
and listing it in ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from thorbis_home_services import loaders
from thorbis_home_services.models import Customer
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres import apply_plugin_sql
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import install_triggers
from thorbis_cache.testing.servers import PostgresServer, RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ha_failover  # a sibling script module, found through the line above

RESTART_TARGET_MS = 250.0  # issue 13: accept -> last stale entry gone, 1,000 changes pending


@attrs.frozen
class Options:
    """The command line, shared by every scenario (each reads what applies to it)."""

    repeat: int = 8
    rows: int = 1000
    tenants: int = 4
    readers: int = 16
    writers: int = 4
    downtimes: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
    signal: str = "kill"
    #: the worker's ``batch_size``; None for its default
    batch_size: int | None = None


@attrs.frozen
class Target:
    """One PASS/MISS line."""

    text: str
    ok: bool


@attrs.define
class Outcome:
    """What a scenario hands back: figures for ``--json`` and its targets."""

    figures: dict[str, Any]
    targets: list[Target]


Scenario = Callable[[Options], Coroutine[Any, Any, Outcome]]


# --------------------------------------------------------------------------- restart

TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
CUSTOMERS_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
SELECT $1, i, 'Ada', 'Lovelace', 'ada@example.com', 'p0', 'residential', 'active',
       'current', -97.7, 30.2
  FROM generate_series(1, $2::int) AS i
"""
# A new phone (the customer's key) and a new account status (a significant column: the
# tenant's list tag too).
CHANGE_SQL = """
UPDATE hs.customers SET phone = $3,
       account_status = CASE account_status WHEN 'active' THEN 'vip' ELSE 'active' END
 WHERE tenant_id = $1 AND id = $2
"""


@attrs.frozen
class Row:
    tenant: str
    id: int


@attrs.define
class Reads:
    """What the readers saw around one restart: while ``recording``, each read's start,
    end, and whether it returned another phone than ``phone`` (the committed one)."""

    recording: bool = False
    phone: str = "p0"
    log: list[tuple[float, float, bool]] = attrs.Factory(list)
    errors: int = 0

    def after(self, accept: float) -> tuple[int, int, float | None]:
        """Reads started at or after ``accept``: how many, how many stale, and when the
        last stale one ended (ms after ``accept``)."""
        reads = [(end, stale) for start, end, stale in self.log if start >= accept]
        ends = [end for end, stale in reads if stale]
        return (len(reads), len(ends),
                (max(ends) - accept) * 1000 if ends else None)


@attrs.frozen
class RestartRun:
    """One repetition of the restart scenario."""

    downtime_s: float
    writes_s: float
    attempts_while_down: int
    restart_to_accept_ms: float
    cached: int
    stale_at_first_look: int
    gone_ms: float
    reads_after_accept: int
    stale_reads: int
    last_stale_read_ms: float | None
    read_errors: int
    probes: int


def _raw(url: str) -> aioredis.Redis:
    """The bench's own client (one retry, at once: its pooled connection dies with the
    server)."""
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 1))


async def _setup_db(dsn: str, rows: Sequence[Row]) -> None:
    """``db init`` for home_services, then the customers, with an empty outbox."""
    manager = PluginManager()
    await manager.load(["home_services"])
    await migrate(dsn)
    await apply_plugin_sql(dsn, list(manager.plugins.values()))
    conn = await asyncpg.connect(dsn)
    try:
        await install_triggers(conn, manager.all_rules())
        per_tenant: dict[str, int] = {}
        for row in rows:
            per_tenant[row.tenant] = max(per_tenant.get(row.tenant, 0), row.id)
        for tenant, count in per_tenant.items():
            await conn.execute(CUSTOMERS_SQL, tenant, count)
        await conn.execute("DELETE FROM thorbis.outbox")
    finally:
        await conn.close()


async def _write(pool: asyncpg.Pool, rows: Sequence[Row], phone: str, writers: int) -> None:
    """One committed UPDATE per row, by ``writers`` concurrent connections."""

    async def writer(mine: Sequence[Row]) -> None:
        async with pool.acquire() as conn:
            for row in mine:
                await conn.execute(CHANGE_SQL, row.tenant, row.id, phone)

    await asyncio.gather(*(writer(rows[w::writers]) for w in range(writers)))


async def _empty(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM thorbis.outbox")


async def _until(what: str, check: Callable[[], Awaitable[bool]], within: float = 60.0
                 ) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:g} s waiting until {what}")
        await asyncio.sleep(0.005)


async def _cache_all(app: CacheApp, pool: asyncpg.Pool, rows: Sequence[Row]) -> None:
    by_tenant: dict[str, list[int]] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant, []).append(row.id)
    for tenant, ids in by_tenant.items():
        for customer in await loaders.customers(pool.fetch, tenant, ids):
            await app.cache.hash(CUSTOMER.key(tenant, customer_id=customer.id)).replace(customer)


async def _reader(app: CacheApp, pool: asyncpg.Pool, rows: Sequence[Row], seen: Reads,
                  stop: asyncio.Event) -> None:
    """Reads random customers as a host does (through ``get_or_load``, so they degrade
    to the loader while Redis is down), logging them while ``seen.recording``."""
    rng = random.Random()
    while not stop.is_set():
        row = rng.choice(rows)
        key = CUSTOMER.key(row.tenant, customer_id=row.id)
        recording, phone = seen.recording, seen.phone
        started = time.monotonic()

        async def load(row: Row = row) -> Customer:
            return await loaders.customer(pool.fetch, row.tenant, row.id)

        try:
            customer = await app.cache.hash(key).get_or_load(load)
        except Exception:
            seen.errors += 1
            await asyncio.sleep(0.001)
            continue
        if recording and seen.recording:
            seen.log.append((started, time.monotonic(), customer.phone != phone))


STALE_KEY = "bench-ha:stale"
# KEYS[1]: a hash of cached key -> the fingerprint it had before the kill (its encrypted
# phone field: a new nonce at every write, so a refill never matches; DUMP would not do,
# a hashtable-encoded hash comes back from the AOF with its fields in another order).
# Drops every entry whose key no longer holds that fingerprint (deleted or refilled) and
# returns how many are left: one round trip per look. Reads undeclared keys: a single
# server only.
STALE_LUA = """
local left = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if redis.call('HGET', entries[i], 'phone') == entries[i + 1] then
    left = left + 1
  else
    redis.call('HDEL', KEYS[1], entries[i])
  end
end
return left
"""

# The watcher, a process of its own (this one is busy with the readers and the worker
# and would see both moments late): PING on a fresh connection every millisecond until
# the first PONG (accept), then STALE_LUA every millisecond until it returns 0 (gone).
# Prints "accept gone stale-at-first-look", times from time.monotonic(), which is this
# process's clock too.
WATCHER = r"""
import socket, sys, time
address = (sys.argv[1], int(sys.argv[2]))
script, key = sys.argv[3].encode(), sys.argv[4].encode()

def call(sock, *args):
    sock.sendall(b"*%d\r\n" % len(args)
                 + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("connection closed")
        reply += chunk
    return reply

while True:
    try:
        sock = socket.create_connection(address, timeout=5)
        if call(sock, b"PING").startswith(b"+PONG"):
            break
        sock.close()
    except OSError:
        pass
    time.sleep(0.001)
accept, first = time.monotonic(), None
while True:
    reply = call(sock, b"EVAL", script, b"1", key)
    if reply.startswith(b":"):
        left = int(reply[1:])
        first = left if first is None else first
        if not left:
            break
    time.sleep(0.001)
print(accept, time.monotonic(), first, flush=True)
"""


async def _watch(server: RedisServer) -> asyncio.subprocess.Process:
    """Start the :data:`WATCHER` on ``server``; its one line is read at the end."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", WATCHER, server.host, str(server.port), STALE_LUA, STALE_KEY,
        stdout=asyncio.subprocess.PIPE)


async def _fingerprint(client: aioredis.Redis, names: Sequence[str]) -> int:
    """Record every cached entry's fingerprint in :data:`STALE_KEY` (it persists in the
    AOF with them); returns how many entries were cached."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(name, "phone")
    found = {n: v for n, v in zip(names, await pipe.execute()) if v is not None}
    await client.delete(STALE_KEY)
    if found:
        await client.hset(STALE_KEY, mapping=found)  # type: ignore[arg-type]
    return len(found)


def _stop_redis(server: RedisServer, how: str) -> None:
    if how == "kill":
        server.kill()
        return
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while server.is_running and time.monotonic() < deadline:
        time.sleep(0.01)


def _worker_options(options: Options) -> dict[str, Any]:
    return {} if options.batch_size is None else {"batch_size": options.batch_size}


async def _backlog_floor(app: CacheApp, dsn: str, pool: asyncpg.Pool,
                         rows: Sequence[Row], options: Options) -> tuple[float, int]:
    """Milliseconds a worker takes to apply one change per row with Redis up (a drain,
    no waiting): the floor under the restart figure. Returns (ms, batches)."""
    async with OutboxWorker.from_app(app, dsn, **_worker_options(options)) as worker:
        await _write(pool, rows, "warm-up", options.writers)
        await worker.drain()  # connections, scripts, the first replay check
        await _cache_all(app, pool, rows)
        await _write(pool, rows, "floor", options.writers)
        started = time.monotonic()
        results = await worker.drain()
        return (time.monotonic() - started) * 1000, len(results)


@attrs.define
class _Rig:
    """The restart scenario's servers, clients, worker and readers."""

    options: Options
    server: RedisServer
    app: CacheApp
    pool: asyncpg.Pool
    raw: aioredis.Redis
    worker: OutboxWorker
    rows: Sequence[Row]
    names: Sequence[str]
    seen: Reads


async def _one_restart(rig: _Rig, rep: int) -> RestartRun:
    """Cache every row, stop Redis, commit a change per row, restart, measure."""
    options, worker, seen = rig.options, rig.worker, rig.seen
    downtime = options.downtimes[rep % len(options.downtimes)]
    await _until("the outbox is empty", lambda: _empty(rig.pool))
    await _cache_all(rig.app, rig.pool, rig.rows)
    cached = await _fingerprint(rig.raw, rig.names)
    probes = worker.metrics.redis_probes
    phone = f"r{rep}"

    down_at = time.monotonic()
    await asyncio.to_thread(_stop_redis, rig.server, options.signal)
    watcher = await _watch(rig.server)
    await _write(rig.pool, rig.rows, phone, options.writers)
    writes_s = time.monotonic() - down_at
    await asyncio.sleep(max(0.0, downtime - (time.monotonic() - down_at)))
    attempts = int(await rig.pool.fetchval(
        "SELECT coalesce(max(attempts), 0) FROM thorbis.outbox"))

    seen.phone, seen.recording, seen.errors = phone, True, 0
    restart_at = time.monotonic()
    restarted = asyncio.create_task(asyncio.to_thread(rig.server.restart))
    assert watcher.stdout is not None
    line = await asyncio.wait_for(watcher.stdout.readline(), 60)
    await watcher.wait()
    accept, gone, first_look = (float(x) for x in line.split())
    await restarted
    await asyncio.sleep(0.3)  # the readers go on: a late stale read would count
    seen.recording = False
    reads, stale_reads, last_stale = seen.after(accept)
    seen.log.clear()
    run = RestartRun(
        downtime, writes_s, attempts, (accept - restart_at) * 1000, cached, int(first_look),
        (gone - accept) * 1000, reads, stale_reads,
        last_stale, seen.errors, worker.metrics.redis_probes - probes)
    return run


async def restart(options: Options) -> Outcome:
    """Redis killed and restarted from its AOF while 1,000 changes commit: accept -> the
    last stale entry gone (see the module docstring)."""
    tenants = TENANT_NAMES[:options.tenants]
    rows = [Row(tenants[i % len(tenants)], i // len(tenants) + 1) for i in range(options.rows)]
    redis_server = RedisServer(appendonly=True, extra_args=["--appendfsync", "always"])
    with PostgresServer() as postgres, redis_server:
        dsn, url = postgres.dsn(), redis_server.url
        await _setup_db(dsn, rows)
        app = await CacheApp(url, keyring=KeyRing.generate()).start(["home_services"])
        pool = await asyncpg.create_pool(dsn, min_size=2,
                                         max_size=max(options.writers, 4) + options.readers)
        raw = _raw(url)
        info = await raw.info("server")
        print(f"restart: redis-server {info['redis_version']} (appendonly, appendfsync "
              f"always), PostgreSQL {await pool.fetchval('SHOW server_version')}; "
              f"{options.rows:,} customers in {len(tenants)} tenants, {options.readers} "
              f"readers, {options.writers} writers, stopped by "
              f"{'kill -9' if options.signal == 'kill' else 'SIGTERM'}")
        floor_ms, floor_batches = await _backlog_floor(app, dsn, pool, rows, options)
        print(f"    backlog alone: {options.rows:,} pending changes applied in "
              f"{floor_ms:.1f} ms ({floor_batches} batch(es)), Redis up")
        names = [app.cache.redis_key(CUSTOMER.key(r.tenant, customer_id=r.id)) for r in rows]
        worker = OutboxWorker.from_app(app, dsn, **_worker_options(options))
        rig = _Rig(options, redis_server, app, pool, raw, worker, rows, names, Reads())
        worker_task = asyncio.create_task(worker.run(), name="ha-worker")
        stop = asyncio.Event()
        readers = [asyncio.create_task(_reader(app, pool, rows, rig.seen, stop),
                                       name=f"ha-reader-{i}") for i in range(options.readers)]
        runs: list[RestartRun] = []
        try:
            for rep in range(options.repeat):
                r = await _one_restart(rig, rep)
                runs.append(r)
                last = "-" if r.last_stale_read_ms is None else f"{r.last_stale_read_ms:.0f}"
                print(f"    #{rep + 1:<2} down {r.downtime_s:.0f} s (writes {r.writes_s:.2f} s,"
                      f" attempts {r.attempts_while_down})  restart->accept "
                      f"{r.restart_to_accept_ms:4.0f} ms  stale at 1st look "
                      f"{r.stale_at_first_look:>4}/{r.cached}  accept->gone {r.gone_ms:6.1f} ms"
                      f"  stale reads {r.stale_reads}/{r.reads_after_accept} (last {last} ms)"
                      f"  probes {r.probes}")
        finally:
            stop.set()
            worker.stop()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.wait_for(worker_task, 10)
            await worker.aclose()
            await raw.aclose()
            await pool.close()
            await app.aclose()
    return _restart_outcome(options, runs, floor_ms, floor_batches)


def _restart_outcome(options: Options, runs: Sequence[RestartRun], floor_ms: float,
                     floor_batches: int) -> Outcome:
    gone = [r.gone_ms for r in runs]
    median, worst = statistics.median(gone), max(gone)
    print(f"    accept -> last stale entry gone: median {median:.1f} ms, max {worst:.1f} ms "
          f"({len(runs)} restarts)")
    if options.readers:
        last_reads = [r.last_stale_read_ms for r in runs if r.last_stale_read_ms is not None]
        print(f"    stale reads after accept: {sum(r.stale_reads for r in runs)} of "
              f"{sum(r.reads_after_accept for r in runs)}; the last one "
              + (f"{max(last_reads):.0f} ms after accept" if last_reads else "never"))
    targets = [
        Target(f"restart: accept -> last stale entry gone, median {median:.1f} ms "
               f"< {RESTART_TARGET_MS:g} ms", median < RESTART_TARGET_MS),
        Target(f"restart: accept -> last stale entry gone, max {worst:.1f} ms "
               f"< {RESTART_TARGET_MS:g} ms", worst < RESTART_TARGET_MS),
        Target("restart: no attempt counted on an outbox row while Redis was down",
               all(r.attempts_while_down == 0 for r in runs)),
    ]
    return Outcome({"options": attrs.asdict(options), "backlog_floor_ms": floor_ms,
                    "backlog_floor_batches": floor_batches,
                    "runs": [attrs.asdict(r) for r in runs],
                    "median_gone_ms": median, "max_gone_ms": worst}, targets)


# --------------------------------------------------------------------------- failover

def _replicated(run: Callable[[int], Awaitable[tuple[dict[str, Any], list[tuple[str, bool]]]]]
                ) -> Scenario:
    """A scenario of ``ha_failover`` (which takes the repetitions only) as a Scenario."""
    async def scenario(options: Options) -> Outcome:
        figures, targets = await run(options.repeat)
        return Outcome(figures, [Target(text, ok) for text, ok in targets])

    scenario.__name__ = run.__name__
    return scenario


# --------------------------------------------------------------------------- main

#: Every scenario, in the order ``--scenario all`` runs them.
SCENARIOS: dict[str, Scenario] = {
    "restart": restart,
    "failover": _replicated(ha_failover.failover),
    "wait": _replicated(ha_failover.wait),
    "resurrection": _replicated(ha_failover.resurrection),
}


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            timeout=10, check=False, cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    """The facts printed first and kept in ``--json``."""
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all",
                        help="which scenario to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="4 repetitions")
    parser.add_argument("--repeat", type=int, help="repetitions per scenario (default 8)")
    parser.add_argument("--rows", type=int, default=1000, help="cached rows changed (1000)")
    parser.add_argument("--tenants", type=int, default=4, choices=range(1, 9),
                        metavar="1-8", help="tenants the rows are spread over (4)")
    parser.add_argument("--readers", type=int, default=16, help="reader tasks (16)")
    parser.add_argument("--writers", type=int, default=4, help="writer connections (4)")
    parser.add_argument("--downtime", default="1,2,3,4", metavar="S,S,...",
                        help="seconds Redis stays down, taken in turn (1,2,3,4)")
    parser.add_argument("--signal", choices=["kill", "term"], default="kill",
                        help="how Redis is stopped: kill -9 (default) or SIGTERM")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="the worker's batch size (default: OutboxWorker's)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--log", action="store_true",
                        help="show the library's warnings (the worker's outage lines, "
                             "each degraded read)")
    args = parser.parse_args(argv)
    # Each degraded read logs a warning: thousands per outage under --readers.
    logging.basicConfig(level=logging.INFO if args.log else logging.ERROR,
                        format="%(relativeCreated)8.0f ms %(name)s: %(message)s")
    options = Options(
        repeat=args.repeat or (4 if args.quick else 8), rows=args.rows, tenants=args.tenants,
        readers=args.readers,
        writers=args.writers, downtimes=tuple(float(s) for s in args.downtime.split(",")),
        signal=args.signal, batch_size=args.batch_size,
    )
    facts = machine()
    la = facts["load_avg_at_start"]
    print(f"$ {facts['command']}")
    print(f"{facts['cpu_count']} cores | load {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} | python "
          f"{facts['python']} | commit {facts['commit']}")
    started = time.monotonic()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    outcomes: dict[str, Outcome] = {}
    for name in names:
        print()
        outcomes[name] = asyncio.run(SCENARIOS[name](options))
    print("\nTargets:")
    for outcome in outcomes.values():
        for target in outcome.targets:
            print(f"    {'PASS' if target.ok else 'MISS'}  {target.text}")
    seconds = time.monotonic() - started
    print(f"\n(finished in {seconds:.1f} s)")
    if args.json:
        report = {"machine": facts, "seconds": seconds,
                  "scenarios": {name: {"figures": o.figures,
                                       "targets": [attrs.asdict(t) for t in o.targets]}
                                for name, o in outcomes.items()}}
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
