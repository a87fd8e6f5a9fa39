"""Change capture, measured on a private PostgreSQL: what it costs the host's own writes,
and how fast the worker turns the captured changes into invalidations.

    .venv/bin/python bench/capture.py                 # about 6 minutes on 2 cores
    .venv/bin/python bench/capture.py --quick         # about 2.5 minutes
    .venv/bin/python bench/capture.py --repeat 5 --seconds 5 --json capture.json
    .venv/bin/python bench/capture.py --modes none,trigger --workers 4   # 4 worker processes
    .venv/bin/python bench/capture.py --nice -10   # the worker (and its sessions) ahead
    .venv/bin/python bench/capture.py --modes none,trigger

Setup: a private PostgreSQL and ``redis-server``; ``db init`` for home_services (core
schema, plugin SQL) and 20,000 customers in two tenants (``globex`` takes the
single-row writes, ``acme`` the bulk UPDATE and the latency probes).

**Host writes, per capture mode** (``MODES``: name -> setup function; ``none`` drops
the capture triggers and the slot, ``trigger`` installs the triggers as ``db init``
does, ``logical`` sets up the publication, the slot and the replica identities as
``db init --capture logical`` does). Per repetition,
every mode in turn (the order flips every repetition), after an untimed ``VACUUM`` of
``hs.customers`` and an empty outbox:

* single-row ``UPDATE hs.customers SET phone = ... WHERE tenant_id = ... AND id = ...``
  (random customer, prepared) by ``pgbench`` at 1 and at 8 connections for
  ``--seconds`` each: transactions/s, and p50/p99 latency from pgbench's
  per-transaction log. pgbench (C) drives the load, so the figures are the server's,
  not a Python client's;
* one ``UPDATE`` of 10,000 rows (every ``acme`` customer's phone), timed by the client.

Each figure is the median across repetitions; each ratio is the median of the
per-repetition ratios mode / ``none`` (tx/s: higher is better; time: lower is better).

**The worker, per capture mode that has one.** The latency and idle figures run it as an
operator does, in a process of its own: ``python -m thorbis_cache.cli worker -p
home_services --no-queue --no-mv --metrics-port PORT`` plus the mode's ``WORKER_ARGS``
(``--capture triggers``, or ``--capture logical --slot bench``), with the bench's DSN,
Redis and key ring in ``THORBIS_POSTGRES_DSN``, ``THORBIS_REDIS_URL``,
``THORBIS_KEYRING`` (no queue consumer, no view refreshes: the change-capture loop
alone). Ready once a first probe is applied; stopped with SIGTERM (killed after 15 s)
on every exit path; its output goes to ``$TMPDIR/thorbis-capture-worker-<mode>.log``.
``--workers N`` runs N worker processes in trigger mode (they share the outbox's claims; a
logical slot has one reader); ``--nice N`` starts them with that nice value and renices
their PostgreSQL sessions (found by client port) once they are up: a negative value
schedules the capture path ahead of the writers' backends on shared cores. Both are
named in the latency targets' text when used.
(Earlier versions ran it as a task in this process, where the probes polled ``EXISTS``
every 0.2 ms on the worker's event loop: their latency figures are not comparable.)

* commit -> invalidated while ``pgbench`` writes at full speed on 8 connections: a probe
  caches an ``acme`` customer (``hash.replace``), subscribes to the key's keyspace
  notifications (``notify-keyspace-events Kg`` on the private Redis; the subscription
  confirmed before the UPDATE), commits an UPDATE of its phone and waits, asleep on the
  socket, for the key's ``del``; latency = del received - commit acknowledged; a probe
  still waiting after 10 s ends the run (``inf``). Printed with it: the writers'
  rows/s (``pg_stat_user_tables``), the changes/s the worker applied (the
  ``thorbis_cache_worker_changes_total`` counter of its /metrics) and the CPU (``/proc``,
  % of one core) of the worker process, of its PostgreSQL sessions (the backends and
  walsender whose client port is one of its sockets) and of the probes;
* the same with the 8 writers held to 2,000 tx/s in all (``pgbench -R``): when the
  writers outrun the worker, the backlog (and so the latency) grows without bound;
* not a target, labelled so: the full-speed run again with the worker process and
  ``redis-server`` on one CPU and PostgreSQL (the postmaster, so the backends it forks
  inherit it, and every process it has forked) and ``pgbench`` (``taskset``) on the
  other, "the worker with a core of its own", as a deployment puts the worker on
  another host than the database; the probes (this process) are not pinned; every
  affinity is restored afterwards. Needs 2 CPUs;
* idle cost: polls/s (PostgreSQL transactions committed) and CPU (the worker process
  plus the PostgreSQL processes) over ``--idle`` seconds with the worker running and
  nothing to do, against the same window without a worker;
* apply rate from a backlog, in this process (``WORKERS``; CPU per change, comparable
  with earlier runs): every customer's phone changed in bulk (``--backlog`` changes
  pending), then ``OutboxWorker.drain()`` timed: changes/s.

Targets (issue 14), printed as PASS/MISS: single-row tx/s >= 0.85x no capture at 1
and 8 connections for triggers, >= 0.95x for logical; the 10,000-row UPDATE <= 1.5x
(triggers), <= 1.1x (logical); commit -> invalidated p50 < 5 ms and p99 < 10 ms under
8 writers; the worker >= 20,000 changes/s. The probes commit with
``synchronous_commit=on`` (logical decoding sees flushed WAL only).

A report, not a test: no assertion, exit status 0 whatever the numbers (see
``bench/README.md``). To add a capture mode (logical decoding, say): a setup function in
``MODES`` (it must leave the database capturing that way and nothing else), and, if it
has a worker of its own, a factory in ``WORKERS`` and its ``thorbis-cache worker``
options in ``WORKER_ARGS``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import redis.asyncio as aioredis
from thorbis_home_services import loaders
from thorbis_home_services.schemas import CUSTOMER

from thorbis_cache import CacheApp, KeyRing
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.plugins.manager import PluginManager
from thorbis_cache.postgres import apply_plugin_sql
from thorbis_cache.postgres.logical import LogicalCapture
from thorbis_cache.postgres.migrations import migrate
from thorbis_cache.postgres.triggers import drop_sql, install_triggers, plan_tables
from thorbis_cache.testing.servers import PostgresServer, RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ha import Target, machine  # a sibling script module, found through the line above

SLOT = "bench"  # the logical mode's slot and publication: thorbis_bench
CUSTOMERS = 10_000  # per tenant; also the size of the bulk UPDATE
WRITE_TENANT, BULK_TENANT = "globex", "acme"
SINGLE_MIN, BULK_MAX = 0.85, 1.5  # issue 14 targets for the trigger path
LATENCY_P50_MS, LATENCY_P99_MS, APPLY_RATE = 5.0, 10.0, 20_000.0
RATED = 2_000  # tx/s of the second latency run: a load the worker keeps up with

CUSTOMERS_SQL = """
INSERT INTO hs.customers (tenant_id, id, first_name, last_name, email, phone, customer_type,
                          account_status, payment_status, longitude, latitude)
SELECT $1, i, 'Ada', 'Lovelace', 'ada@example.com', 'p0', 'residential', 'active',
       'current', -97.7, 30.2
  FROM generate_series(1, $2::int) AS i
"""
PGBENCH_SCRIPT = f"""\\set id random(1, {CUSTOMERS})
\\set v random(1, 1000000000)
UPDATE hs.customers SET phone = 'p' || :v WHERE tenant_id = '{WRITE_TENANT}' AND id = :id;
"""  # noqa: S608 -- constants of this script
BULK_SQL = "UPDATE hs.customers SET phone = $2 WHERE tenant_id = $1"


@attrs.frozen
class Options:
    """The command line."""

    repeat: int = 3
    seconds: float = 3.0
    probes: int = 300
    idle: float = 5.0
    backlog: int = 60_000
    modes: tuple[str, ...] = ("none", "trigger", "logical")
    #: worker processes under load in trigger mode (they share the outbox's claims;
    #: a logical slot has one reader, so logical runs one)
    workers: int = 1
    #: the worker processes' nice value, and their PostgreSQL sessions' (negative:
    #: scheduled ahead of the database's other backends where they share cores; root)
    nice: int = 0


# --------------------------------------------------------------------------- modes

Setup = Callable[[asyncpg.Connection, PluginManager], Awaitable[None]]


def _logical(manager: PluginManager) -> LogicalCapture:
    return LogicalCapture(SLOT, manager.all_rules(), manager.all_views())


async def no_capture(conn: asyncpg.Connection, manager: PluginManager) -> None:
    """No capture at all: the anchor every ratio is taken against (no trigger, no slot,
    default replica identities)."""
    for plan in plan_tables(manager.all_rules(), manager.all_views()):
        for statement in drop_sql(plan.table):
            await conn.execute(statement)
        await conn.execute(f"ALTER TABLE {plan.table} REPLICA IDENTITY DEFAULT")
    await _logical(manager).drop(conn)


async def logical_capture(conn: asyncpg.Connection, manager: PluginManager) -> None:
    """Logical decoding: no trigger; a publication, a slot (it holds the WAL back until
    the worker reads it) and REPLICA IDENTITY FULL where a rule reads old values, as
    ``db init --capture logical`` sets them up."""
    await no_capture(conn, manager)
    await _logical(manager).ensure(conn)


async def trigger_capture(conn: asyncpg.Connection, manager: PluginManager) -> None:
    """The capture triggers, as ``thorbis-cache db init`` installs them, and nothing
    left of the logical mode (an unread slot, FULL replica identities)."""
    await no_capture(conn, manager)
    await install_triggers(conn, manager.all_rules(), manager.all_views())


#: Capture modes compared on the host's writes: name -> setup. ``none`` is the anchor.
MODES: dict[str, Setup] = {"none": no_capture, "trigger": trigger_capture,
                           "logical": logical_capture}

WorkerFactory = Callable[[CacheApp, str], OutboxWorker]

#: The worker that applies each capture mode's changes (modes without one: host only).
WORKERS: dict[str, WorkerFactory] = {
    "trigger": lambda app, dsn: OutboxWorker.from_app(app, dsn),
    "logical": lambda app, dsn: OutboxWorker.from_app(
        app, dsn, capture=_logical(app.plugins)),
}

#: The same, as ``thorbis-cache worker`` options (the latency runs start that command).
WORKER_ARGS: dict[str, list[str]] = {
    "trigger": ["--capture", "triggers"],
    "logical": ["--capture", "logical", "--slot", SLOT],
}


# --------------------------------------------------------------------------- host writes


@attrs.frozen
class Pgbench:
    """One pgbench run."""

    tps: float
    p50_ms: float
    p99_ms: float


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def pgbench(server: PostgresServer, clients: int, seconds: float, rate: int | None = None,
            cpus: str | None = None) -> Pgbench:
    """Run the single-row UPDATE script (at full speed, or ``rate`` tx/s in all; on the
    CPUs ``cpus`` if given, ``taskset -c`` syntax); tx/s from pgbench, latency from its
    log."""
    with tempfile.TemporaryDirectory(prefix="thorbis-pgbench-") as tmp:
        script = Path(tmp) / "update.sql"
        script.write_text(PGBENCH_SCRIPT)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(
            [*(["taskset", "-c", cpus] if cpus else []),
             str(server.binaries.initdb.parent / "pgbench"), "-n", "-h", "127.0.0.1",
             "-p", str(server.port), "-U", server.user, "-c", str(clients),
             "-j", str(min(clients, os.cpu_count() or 1)), "-T", str(max(1, round(seconds))),
             "-M", "prepared", "-f", str(script), "-l", f"--log-prefix={tmp}/log",
             *(["-R", str(rate)] if rate else []), "postgres"],
            capture_output=True, text=True, check=True, env=env, cwd=tmp)
        match = re.search(r"tps = ([\d.]+) \(without initial", done.stdout)
        if match is None:
            raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
        latencies = [int(line.split()[2]) / 1000
                     for log in Path(tmp).glob("log*") for line in log.read_text().splitlines()]
    return Pgbench(float(match.group(1)), percentile(latencies, 50), percentile(latencies, 99))


async def fresh(conn: asyncpg.Connection) -> None:
    """Untimed: an empty outbox and a vacuumed table, so runs start alike."""
    await conn.execute("TRUNCATE thorbis.outbox")
    await conn.execute("VACUUM hs.customers")
    await conn.execute("CHECKPOINT")


async def host_writes(server: PostgresServer, conn: asyncpg.Connection,
                      manager: PluginManager, options: Options) -> dict[str, Any]:
    """Single-row tx/s and latency at 1 and 8 connections, and the bulk UPDATE, per mode
    and repetition."""
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in options.modes}
    for rep in range(options.repeat):
        order = options.modes if rep % 2 == 0 else tuple(reversed(options.modes))
        for mode in order:
            await MODES[mode](conn, manager)
            figures: dict[str, float] = {}
            for clients in (1, 8):
                await fresh(conn)
                run = await asyncio.to_thread(pgbench, server, clients, options.seconds)
                figures |= {f"tps_{clients}": run.tps, f"p50_ms_{clients}": run.p50_ms,
                            f"p99_ms_{clients}": run.p99_ms}
            await fresh(conn)
            started = time.perf_counter()
            await conn.execute(BULK_SQL, BULK_TENANT, f"b{rep}")
            figures["bulk_ms"] = (time.perf_counter() - started) * 1000
            runs[mode].append(figures)
            print(f"    #{rep + 1} {mode:<8} 1 conn {figures['tps_1']:7.0f} tx/s   8 conns "
                  f"{figures['tps_8']:7.0f} tx/s   10,000-row UPDATE "
                  f"{figures['bulk_ms']:6.1f} ms")
    await fresh(conn)
    return {"runs": runs}


def host_table(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Medians per mode and median per-repetition ratios against ``none``."""
    table: dict[str, dict[str, float]] = {}
    anchor = runs.get("none")
    for mode, reps in runs.items():
        row = {name: statistics.median(r[name] for r in reps) for name in reps[0]}
        if anchor is not None:
            for name in ("tps_1", "tps_8", "bulk_ms"):
                row[f"{name}_ratio"] = statistics.median(
                    r[name] / a[name] for r, a in zip(reps, anchor, strict=True))
        table[mode] = row
    print(f"\n    {'mode':<9}{'1 conn tx/s':>12}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'8 conns tx/s':>14}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'10k UPDATE ms':>15}{'ratio':>7}")
    for mode, row in table.items():
        print(f"    {mode:<9}{row['tps_1']:12.0f}{row.get('tps_1_ratio', 1):7.2f}"
              f"{row['p50_ms_1']:8.3f}{row['p99_ms_1']:8.3f}"
              f"{row['tps_8']:14.0f}{row.get('tps_8_ratio', 1):7.2f}"
              f"{row['p50_ms_8']:8.3f}{row['p99_ms_8']:8.3f}"
              f"{row['bulk_ms']:15.1f}{row.get('bulk_ms_ratio', 1):7.2f}")
    return table


# --------------------------------------------------------------------------- the worker


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of ``pids`` so far (processes gone in between count as 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _postgres_pids(postmaster: int) -> list[int]:
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.parent.name))
    return pids


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """``thorbis-cache worker`` in a process of its own, as an operator runs it (the
    console script's module under this interpreter), serving /metrics on a free port."""

    #: The worker's applied-changes counter on /metrics (WorkerMetrics.processed).
    APPLIED = re.compile(rb"^thorbis_cache_worker_changes_total (\S+)$", re.MULTILINE)

    def __init__(self, dsn: str, url: str, mode: str, keyring: str, log: Path,
                 nice: int = 0) -> None:
        self.port = _free_port()
        self.log = log
        # The bench's Redis and database, its key ring (the worker only deletes keys, but
        # the ring is the one the probes' values are written with, as in production).
        env = {**os.environ, "THORBIS_POSTGRES_DSN": dsn, "THORBIS_REDIS_URL": url,
               "THORBIS_KEYRING": keyring}
        # --no-queue --no-mv: the change-capture loop alone, as the in-process worker
        # measured before (no invalidation-queue consumer, no view refreshes mid-run).
        argv = [sys.executable, "-m", "thorbis_cache.cli", "worker", "-p", "home_services",
                "--no-queue", "--no-mv", "--metrics-port", str(self.port),
                *WORKER_ARGS[mode]]
        if nice:
            argv = ["nice", "-n", str(nice), *argv]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the process still runs (else :meth:`failure` says why)."""
        return self.proc.poll() is None

    def failure(self) -> RuntimeError:
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return RuntimeError(f"the worker process exited with status {self.proc.poll()}:\n"
                            f"{tail}")

    def _scrape(self) -> float:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            match = self.APPLIED.search(response.read())
        if match is None:
            raise RuntimeError(f"no thorbis_cache_worker_changes_total on {url}")
        return float(match.group(1))

    async def applied(self) -> float:
        """Changes the worker has applied so far (its /metrics counter)."""
        return await asyncio.to_thread(self._scrape)

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM (it finishes the batch in hand and exits 0), SIGKILL after ``grace``
        seconds; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        return self.proc.returncode


class WorkerGroup:
    """``n`` :class:`WorkerProcess` es of one mode, seen as one worker: their applied
    changes summed, alive while all are, their pids for CPU figures and affinity."""

    def __init__(self, processes: Sequence[WorkerProcess]) -> None:
        self.processes = list(processes)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.processes]

    @property
    def log(self) -> Path:
        return self.processes[0].log

    def alive(self) -> bool:
        return all(w.alive() for w in self.processes)

    def failure(self) -> RuntimeError:
        dead = next((w for w in self.processes if not w.alive()), self.processes[0])
        return dead.failure()

    async def applied(self) -> float:
        return sum([await w.applied() for w in self.processes])


@contextlib.asynccontextmanager
async def worker_processes(dsn: str, url: str, mode: str, keyring: str, log: Path,
                           n: int = 1, nice: int = 0) -> AsyncIterator[WorkerGroup]:
    """``n`` running :class:`WorkerProcess` es (logs ``log``, ``log.1``...), stopped
    (killed if need be) on any exit."""
    processes: list[WorkerProcess] = []
    try:
        for i in range(n):
            processes.append(WorkerProcess(dsn, url, mode, keyring,
                                           log if i == 0 else log.with_suffix(f".{i}.log"),
                                           nice))
        yield WorkerGroup(processes)
    finally:
        for worker in processes:
            status = await worker.stop()
            if status not in (0, None):
                print(f"    a worker process exited with status {status} (log: {worker.log})")


class WorkerGone(RuntimeError):
    """The worker process exited during a probe."""


class Probe:
    """Commit -> invalidated of one cached ``acme`` customer: cache it
    (``hash.replace``), subscribe to its key's keyspace notifications, commit an UPDATE
    of its phone, and take the time when Redis announces the key's ``del``. The probe
    sleeps in a socket read meanwhile (no polling: nothing taken from the worker)."""

    def __init__(self, app: CacheApp, pool: asyncpg.Pool, raw: aioredis.Redis) -> None:
        self.app, self.pool, self.raw = app, pool, raw
        self.db = int(raw.connection_pool.connection_kwargs.get("db", 0))
        self.pubsub = raw.pubsub()

    async def start(self) -> Probe:
        # K: keyspace channels (__keyspace@<db>__:<key>), g: generic commands (DEL).
        await self.raw.config_set("notify-keyspace-events", "Kg")
        return self

    async def aclose(self) -> None:
        await self.pubsub.aclose()

    async def _subscribed(self, channel: bytes) -> None:
        await self.pubsub.subscribe(channel)
        # Wait for Redis's confirmation: from then on the del cannot be missed.
        while True:
            message = await self.pubsub.get_message(timeout=5.0)
            if message is None:
                raise RuntimeError(f"no confirmation of SUBSCRIBE {channel!r}")
            if message["type"] == "subscribe" and message["channel"] == channel:
                return

    async def __call__(self, customer_id: int, phone: str, limit: float,
                      alive: Callable[[], bool] | None = None) -> float | None:
        """Seconds from the UPDATE's commit to the key's deletion, or None after
        ``limit`` seconds. Raises if ``alive`` turns false meanwhile."""
        key = CUSTOMER.key(BULK_TENANT, customer_id=customer_id)
        await self.app.cache.hash(key).replace(
            await loaders.customer(self.pool.fetch, BULK_TENANT, customer_id))
        channel = f"__keyspace@{self.db}__:{self.app.cache.redis_key(key)}".encode()
        await self._subscribed(channel)
        try:
            await self.pool.execute("UPDATE hs.customers SET phone = $3 WHERE tenant_id = $1 "
                                    "AND id = $2", BULK_TENANT, customer_id, phone)
            committed = time.perf_counter()
            while (left := committed + limit - time.perf_counter()) > 0:
                message = await self.pubsub.get_message(timeout=min(left, 1.0))
                if (message is not None and message["type"] == "message"
                        and message["channel"] == channel and message["data"] == b"del"):
                    return time.perf_counter() - committed
                if alive is not None and not alive():
                    raise WorkerGone("the worker stopped during a probe")
            return None
        finally:
            await self.pubsub.unsubscribe(channel)


async def _probe_while_running(probe: Probe, worker: WorkerGroup, phone: str,
                               limit: float) -> float | None:
    """One probe (customer 1000) while ``worker`` runs; its failure if it exits."""
    try:
        return await probe(1000, phone, limit, worker.alive)
    except WorkerGone:
        raise worker.failure() from None


async def ready(probe: Probe, worker: WorkerGroup, limit: float = 60.0) -> float:
    """Seconds until the freshly started worker applies a change (start-up included)."""
    started = time.perf_counter()
    if await _probe_while_running(probe, worker, "ready", limit) is None:
        raise RuntimeError(f"the worker applied no change within {limit:.0f} s "
                           f"(log: {worker.log})")
    return time.perf_counter() - started


async def idle_cost(server: PostgresServer, conn: asyncpg.Connection, seconds: float,
                    worker: WorkerGroup | None) -> dict[str, float]:
    """Transactions/s and CPU (% of one core: the worker process, if any, and
    PostgreSQL's processes) over ``seconds`` of nothing to do."""
    postmaster = server.pid or 0
    commits = "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"
    await asyncio.sleep(0.5 if worker else 0.1)  # let the pause reach its cap
    pids = _postgres_pids(postmaster) + (worker.pids if worker else [])
    before_tx, before_cpu = await conn.fetchval(commits), _cpu_seconds(pids)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds(pids) - before_cpu
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    # The statistics are sent at most every 0.5 s: wait for them, then count.
    await asyncio.sleep(1.1)
    tx = await conn.fetchval(commits) - before_tx
    return {"tx_per_s": tx / elapsed, "cpu_pct": cpu / elapsed * 100}


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of ``pid``'s sockets (its end of each connection)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[9]) in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def sessions(pool: asyncpg.Pool, worker: WorkerGroup) -> list[int]:
    """The pids of the worker's PostgreSQL sessions (backends, the logical capture's
    walsender): those whose client port is one of the worker processes' sockets."""
    ports = set().union(*(_local_ports(pid) for pid in worker.pids))
    return [int(pid) for pid in await pool.fetchval(
        "SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity "
        "WHERE client_port = ANY($1::int[])", sorted(ports))]


async def _updates(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT n_tup_upd FROM pg_stat_user_tables "
                                   "WHERE relid = 'hs.customers'::regclass"))


@attrs.frozen
class Latency:
    """One latency run: commit -> invalidated samples (ms) and what ran meanwhile."""

    samples: list[float]
    rows_per_s: float  # the writers' (pgbench's) updates
    applied_per_s: float  # the worker's changes applied (its /metrics counter)
    worker_cpu_pct: float  # the worker process, % of one core
    sessions_cpu_pct: float  # its PostgreSQL sessions (backends, walsender), % of one core
    probe_cpu_pct: float  # this process (the probes), % of one core


async def latency_under_load(server: PostgresServer, probe: Probe, pool: asyncpg.Pool,
                             options: Options, rate: int | None, worker: WorkerGroup,
                             cpus: str | None = None) -> Latency:
    """Commit -> key gone (ms) of ``options.probes`` probe UPDATEs while pgbench writes
    on 8 connections (at full speed, or ``rate`` tx/s in all; on ``cpus`` if given);
    prints the rows the writers updated per second and the changes the worker applied
    per second."""
    seconds = 3600.0
    updates, applied = await _updates(pool), await worker.applied()
    backends = await sessions(pool, worker)
    cpu, own, started = _cpu_seconds(worker.pids), time.process_time(), time.perf_counter()
    db_cpu = _cpu_seconds(backends)
    load = asyncio.create_task(asyncio.to_thread(pgbench, server, 8, seconds, rate, cpus))
    samples: list[float] = []
    try:
        await asyncio.sleep(1.0)  # the writers are up to speed
        for n in range(options.probes):
            taken = await probe(n % 1000 + 1, f"q{n}", 10.0, worker.alive)
            if taken is None:
                # The worker does not keep up with the writers: say so, do not wait.
                print(f"    probe {n}: key still there after 10 s; stopping")
                samples.append(float("inf"))
                break
            samples.append(taken * 1000)
            await asyncio.sleep(0.01)
    except WorkerGone:
        raise worker.failure() from None
    finally:
        # pgbench's -T is long: stop it by terminating its connections.
        await pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'pgbench'")
        # Terminated connections make pgbench exit with an error: expected.
        with contextlib.suppress(subprocess.CalledProcessError, RuntimeError):
            await load
    await asyncio.sleep(1.0)  # backends publish their table counts within a second
    elapsed = time.perf_counter() - started
    run = Latency(samples, (await _updates(pool) - updates) / elapsed,
                  (await worker.applied() - applied) / elapsed,
                  (_cpu_seconds(worker.pids) - cpu) / elapsed * 100,
                  (_cpu_seconds(backends) - db_cpu) / elapsed * 100,
                  (time.process_time() - own) / elapsed * 100)
    print(f"    writers updated {run.rows_per_s:,.0f} rows/s; the worker applied "
          f"{run.applied_per_s:,.0f} changes/s; % of a core: the worker process "
          f"{run.worker_cpu_pct:.0f}, its {len(backends)} PostgreSQL session(s) "
          f"{run.sessions_cpu_pct:.0f}, the probes {run.probe_cpu_pct:.0f}")
    return run


async def settle(probe: Probe, worker: WorkerGroup, limit: float = 180.0) -> float:
    """Seconds until the running worker applies a change committed now, i.e. until it
    is through the backlog before it (at most ``limit``)."""
    started = time.perf_counter()
    if await _probe_while_running(probe, worker, "settle", limit) is None:
        print(f"    the backlog was not through after {limit:.0f} s")
    seconds = time.perf_counter() - started
    print(f"    backlog left by the full-speed writers applied in {seconds:.2f} s")
    return seconds


def _set_affinity(pids: Sequence[int], cpus: set[int]) -> None:
    """Every thread of ``pids`` on ``cpus`` (processes gone in between are skipped)."""
    for pid in pids:
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in threads:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


@contextlib.contextmanager
def own_core(postmaster: int, others: Sequence[int], database: set[int], worker: set[int]
             ) -> Iterator[None]:
    """PostgreSQL on ``database`` (the postmaster first: the backends it forks from then
    on inherit it; then every process it has forked), ``others`` (the worker process,
    redis-server) on ``worker``; every affinity back to all CPUs on exit. pgbench is put
    on ``database`` by its caller (``taskset``)."""
    everything = os.sched_getaffinity(0)
    _set_affinity([postmaster], database)
    _set_affinity(_postgres_pids(postmaster), database)
    _set_affinity(others, worker)
    try:
        yield
        stray = [pid for pid in _postgres_pids(postmaster)
                 if os.sched_getaffinity(pid) != database]
        if stray:
            print(f"    note: {len(stray)} PostgreSQL process(es) not on CPU {database}")
    finally:
        _set_affinity(_postgres_pids(postmaster), everything)
        _set_affinity(others, everything)


async def apply_rate(conn: asyncpg.Connection, worker: OutboxWorker, backlog: int
                     ) -> tuple[int, float]:
    """Changes pending after bulk UPDATEs of every customer, then drained: (changes,
    seconds). Pending: the outbox's rows, or under logical capture the rows updated."""
    await conn.execute("TRUNCATE thorbis.outbox")
    # Flushed at commit, as production runs: logical decoding reads flushed WAL only.
    await conn.execute("SET synchronous_commit = on")
    await worker.drain()  # a slot's leftovers from the latency runs
    rounds = max(1, backlog // (2 * CUSTOMERS))
    changed = 0
    for r in range(rounds):
        status = await conn.execute("UPDATE hs.customers SET phone = $1", f"r{r}")
        changed += int(status.split()[-1])
    started = time.perf_counter()
    results = await worker.drain()
    seconds = time.perf_counter() - started
    # Under logical capture every updated row is one change; with triggers, one row each.
    applied = sum(r.claimed for r in results)
    if applied != changed:
        print(f"    note: {applied:,} changes applied for {changed:,} rows updated")
    return applied, seconds


def _latency_figures(prefix: str, run: Latency) -> dict[str, float]:
    samples = run.samples
    return {f"{prefix}p50_ms": percentile(samples, 50), f"{prefix}p90_ms": percentile(samples, 90),
            f"{prefix}p99_ms": percentile(samples, 99), f"{prefix}max_ms": max(samples),
            f"{prefix}probes": len(samples), f"{prefix}rows_per_s": run.rows_per_s,
            f"{prefix}applied_per_s": run.applied_per_s,
            f"{prefix}worker_cpu_pct": run.worker_cpu_pct,
            f"{prefix}sessions_cpu_pct": run.sessions_cpu_pct,
            f"{prefix}probe_cpu_pct": run.probe_cpu_pct}


async def worker_figures(server: PostgresServer, redis_server: RedisServer,
                         conn: asyncpg.Connection, manager: PluginManager, mode: str,
                         options: Options) -> dict[str, Any]:
    """Latency under load (the worker in its own process), idle cost and apply rate (in
    this process) of ``mode``'s worker."""
    dsn, url = server.dsn(), redis_server.url
    await MODES[mode](conn, manager)
    await fresh(conn)
    keyring = KeyRing.generate()
    app = await CacheApp(url, keyring=keyring).start(["home_services"])
    # Probes commit with synchronous_commit on, as production runs (the test server's
    # default is off): logical decoding sees a commit once its WAL is flushed.
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4,
                                     server_settings={"synchronous_commit": "on"})
    raw = aioredis.Redis.from_url(url)
    probe = await Probe(app, pool, raw).start()
    cpus = sorted(os.sched_getaffinity(0))
    own: Latency | None = None
    try:
        baseline = await idle_cost(server, conn, options.idle, None)
        log = Path(tempfile.gettempdir()) / f"thorbis-capture-worker-{mode}.log"
        n = options.workers if mode == "trigger" else 1
        async with worker_processes(dsn, url, mode, keyring.to_string(), log, n,
                                    options.nice) as worker:
            started = await ready(probe, worker)
            if options.nice:
                # The worker's PostgreSQL sessions (its backends, the walsender) do its
                # reading: the same priority for them.
                backends = await sessions(pool, worker)
                for pid in backends:
                    os.setpriority(os.PRIO_PROCESS, pid, options.nice)
                print(f"    {mode}: worker process(es) and their {len(backends)} PostgreSQL "
                      f"session(s) at nice {options.nice}")
            print(f"    {mode}: worker process(es) {', '.join(map(str, worker.pids))} up, "
                  "first change applied "
                  f"{started:.2f} s after start")
            idle = await idle_cost(server, conn, options.idle, worker)
            full = await latency_under_load(server, probe, pool, options, None, worker)
            # What the full-speed writers left behind (in the outbox, or in the slot)
            # must not count against the rated run: wait until the worker is through.
            settled = await settle(probe, worker)
            await fresh(conn)
            rated = await latency_under_load(server, probe, pool, options, RATED, worker)
            if len(cpus) >= 2:
                await fresh(conn)
                database, apart = {cpus[0]}, {cpus[1]}
                print(f"    {mode}: own core: PostgreSQL and pgbench on CPU {cpus[0]}, the "
                      f"worker and redis-server on CPU {cpus[1]}")
                with own_core(server.pid or 0, [*worker.pids, redis_server.pid or 0],
                              database, apart):
                    own = await latency_under_load(server, probe, pool, options, None,
                                                   worker, str(cpus[0]))
                    await settle(probe, worker)
        await fresh(conn)
        drainer = WORKERS[mode](app, dsn)
        pending, seconds = await apply_rate(conn, drainer, options.backlog)
        await drainer.aclose()
    finally:
        await probe.aclose()
        await raw.aclose()
        await pool.close()
        await app.aclose()
    figures: dict[str, Any] = {
        **_latency_figures("", full),
        "idle_polls_per_s": idle["tx_per_s"] - baseline["tx_per_s"],
        "idle_cpu_pct": idle["cpu_pct"] - baseline["cpu_pct"],
        **_latency_figures("rated_", rated), "settle_seconds": settled,
        **(_latency_figures("own_core_", own) if own else {}),
        "backlog": pending, "apply_seconds": seconds,
        "changes_per_s": pending / seconds, "worker_processes": n,
        "worker_nice": options.nice,
    }
    print(f"    {mode}: commit -> invalidated under 8 writers p50 {figures['p50_ms']:.2f} ms,"
          f" p90 {figures['p90_ms']:.2f}, p99 {figures['p99_ms']:.2f}, max "
          f"{figures['max_ms']:.2f} ({len(full.samples)} probes)")
    print(f"    {mode}: the same with the 8 writers held to {RATED:,} tx/s in all: p50 "
          f"{figures['rated_p50_ms']:.2f} ms, p99 {figures['rated_p99_ms']:.2f}, max "
          f"{figures['rated_max_ms']:.2f}")
    if own:
        print(f"    {mode}: (not a target) full speed, the worker with a core of its own: p50 "
              f"{figures['own_core_p50_ms']:.2f} ms, p99 {figures['own_core_p99_ms']:.2f}, "
              f"max {figures['own_core_max_ms']:.2f} ({len(own.samples)} probes)")
    print(f"    {mode}: idle worker {figures['idle_polls_per_s']:.0f} polls/s, "
          f"{figures['idle_cpu_pct']:.1f}% of a core (the worker process + PostgreSQL, over "
          "the same window without a worker)")
    print(f"    {mode}: {pending:,} pending changes applied in {seconds:.2f} s: "
          f"{figures['changes_per_s']:,.0f} changes/s (OutboxWorker.drain in this process)")
    return figures


# --------------------------------------------------------------------------- main


async def setup_db(dsn: str) -> tuple[asyncpg.Connection, PluginManager]:
    """``db init`` for home_services (triggers left to the modes) and the customers."""
    manager = PluginManager()
    await manager.load(["home_services"])
    await migrate(dsn)
    await apply_plugin_sql(dsn, list(manager.plugins.values()))
    conn = await asyncpg.connect(dsn)
    for tenant in (WRITE_TENANT, BULK_TENANT):
        await conn.execute(CUSTOMERS_SQL, tenant, CUSTOMERS)
    await conn.execute("ANALYZE hs.customers")
    return conn, manager


#: The issue 14 host-write targets per mode: (single-row ratio at least, bulk ratio at most).
HOST_TARGETS = {"trigger": (SINGLE_MIN, BULK_MAX), "logical": (0.95, 1.1)}


def targets(table: dict[str, dict[str, float]], workers: dict[str, dict[str, Any]]
            ) -> list[Target]:
    """The issue 14 targets of each capture mode measured."""
    found: list[Target] = []
    for mode, (single_min, bulk_max) in HOST_TARGETS.items():
        row = table.get(mode)
        if row is not None and "tps_1_ratio" in row:
            for clients in (1, 8):
                ratio = row[f"tps_{clients}_ratio"]
                found.append(Target(f"{mode}: single-row UPDATE at {clients} connection(s) "
                                    f"{ratio:.2f}x no capture >= {single_min}x",
                                    ratio >= single_min))
            ratio = row["bulk_ms_ratio"]
            found.append(Target(f"{mode}: 10,000-row UPDATE {ratio:.2f}x no capture "
                                f"<= {bulk_max}x", ratio <= bulk_max))
        figures = workers.get(mode)
        if figures is not None:
            n = figures["worker_processes"]
            load = "8 writers" + (f", {n} worker processes" if n > 1 else "") + (
                f", worker nice {figures['worker_nice']}" if figures["worker_nice"] else "")
            found += [
                Target(f"{mode}: commit -> invalidated p50 {figures['p50_ms']:.2f} ms "
                       f"< {LATENCY_P50_MS:g} ms ({load})",
                       figures["p50_ms"] < LATENCY_P50_MS),
                Target(f"{mode}: commit -> invalidated p99 {figures['p99_ms']:.2f} ms "
                       f"< {LATENCY_P99_MS:g} ms ({load})",
                       figures["p99_ms"] < LATENCY_P99_MS),
                Target(f"{mode}: worker applies {figures['changes_per_s']:,.0f} changes/s "
                       f">= {APPLY_RATE:,.0f}", figures["changes_per_s"] >= APPLY_RATE),
            ]
    return found


async def run(options: Options) -> dict[str, Any]:
    """Every measurement; returns the figures and prints the tables."""
    with PostgresServer() as server, RedisServer() as redis_server:
        conn, manager = await setup_db(server.dsn())
        try:
            print(f"PostgreSQL {await conn.fetchval('SHOW server_version')} (wal_level "
                  f"{await conn.fetchval('SHOW wal_level')}, synchronous_commit "
                  f"{await conn.fetchval('SHOW synchronous_commit')}); {2 * CUSTOMERS:,} "
                  f"customers; modes {', '.join(options.modes)}; {options.repeat} "
                  f"repetitions of {options.seconds:g} s per pgbench run")
            print("\nHost writes (pgbench, single-row UPDATE by primary key; one bulk "
                  "UPDATE of 10,000 rows):")
            host = await host_writes(server, conn, manager, options)
            table = host_table(host["runs"])
            print("\nThe worker (thorbis-cache worker in a process of its own, Redis "
                  "private):")
            workers = {mode: await worker_figures(server, redis_server, conn, manager,
                                                  mode, options)
                       for mode in options.modes if mode in WORKERS}
        finally:
            await conn.close()
    return {"host": host, "table": table, "workers": workers,
            "targets": targets(table, workers)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 s pgbench runs, 100 probes, 20,000 changes of backlog")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--seconds", type=float, help="seconds per pgbench run (3)")
    parser.add_argument("--probes", type=int, help="commit -> invalidated probes (300)")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds of the idle-cost window (5)")
    parser.add_argument("--backlog", type=int, help="changes pending for the apply rate "
                                                     "(60000)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"capture modes, comma-separated ({','.join(MODES)})")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes under load in trigger mode (1); logical "
                             "capture runs one (one reader per slot)")
    parser.add_argument("--nice", type=int, default=0,
                        help="the worker processes' and their PostgreSQL sessions' nice "
                             "value (0); negative puts them ahead of the writers' backends "
                             "on shared cores (root)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    options = Options(
        repeat=args.repeat, seconds=args.seconds or (1.0 if args.quick else 3.0),
        probes=args.probes or (100 if args.quick else 300), idle=args.idle,
        backlog=args.backlog or (20_000 if args.quick else 60_000), modes=modes,
        workers=args.workers, nice=args.nice)
    facts = machine()
    la = facts["load_avg_at_start"]
    print(f"$ {facts['command']}")
    print(f"{facts['cpu_count']} cores | load {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} | python "
          f"{facts['python']} | commit {facts['commit']}")
    started = time.monotonic()
    report = asyncio.run(run(options))
    print("\nTargets:")
    for target in report["targets"]:
        print(f"    {'PASS' if target.ok else 'MISS'}  {target.text}")
    seconds = time.monotonic() - started
    print(f"\n(finished in {seconds:.1f} s)")
    if args.json:
        out = {"machine": facts, "seconds": seconds, "options": attrs.asdict(options),
               **{k: v for k, v in report.items() if k != "targets"},
               "targets": [attrs.asdict(t) for t in report["targets"]]}
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
