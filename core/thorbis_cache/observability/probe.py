"""What is read from the servers at scrape time: Redis reachability and PING latency,
the invalidation queue's depth, age and dead letters, and the outbox's backlog, age
and dead letters; and, for a health check, the rest of the servers' state.

These figures live in Redis and PostgreSQL, not in the process, so they are read once
per scrape by :meth:`Probe.refresh`, which an ASGI handler awaits before the synchronous
Prometheus collection reads the snapshot. :meth:`Probe.examine` (``/health`` and
``thorbis-cache health``) reads that and more: every master's ``INFO`` (memory,
eviction policy, replicas and their lag), ``CLUSTER INFO`` on a Cluster, what the
sentinels say on a Sentinel group, the materialized views' freshness and the logical
capture slots. Nothing is written. Every read is bounded by ``timeout``; a server that
does not answer is a figure (``up`` 0 and the error), never an exception.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

import attrs
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from thorbis_cache.cache.meta_keys import MetaKeys
from thorbis_cache.invalidation.queue import QueueKeys
from thorbis_cache.mv.refresh import history_exists
from thorbis_cache.mv.scheduler import ScheduledView, ViewReport, report
from thorbis_cache.plugins.declarations import InvalidationRule
from thorbis_cache.postgres import connection
from thorbis_cache.postgres.capture_check import capture_problems
from thorbis_cache.postgres.capture_ddl import SLOT_MADE, CaptureDrift, drifted_captures
from thorbis_cache.postgres.logical import LogicalCapture
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.redis_url import RedisAddress, Topology
from thorbis_cache.store.scripts import Script, load_lua

__all__ = ["CaptureSlot", "HealthReading", "MasterState", "Probe", "ProbeResult",
           "ReplicaState", "SentinelState", "TopologyReading", "info_fields",
           "read_masters"]

# Parked changes (their Cluster shard out of reach) are pending too: in the backlog and
# its age, and counted apart.
_OUTBOX = """
SELECT (SELECT count(*) FROM thorbis.outbox) + (SELECT count(*) FROM thorbis.parked_changes)
           AS backlog,
       (SELECT extract(epoch FROM clock_timestamp() - min(oldest))::float8
          FROM (SELECT min(created_at) AS oldest FROM thorbis.outbox
                UNION ALL SELECT min(created_at) FROM thorbis.parked_changes) AS o) AS oldest,
       (SELECT count(*) FROM thorbis.parked_changes) AS parked,
       (SELECT count(*) FROM thorbis.outbox_dead_letters) AS dead,
       pg_is_in_recovery() AS standby
"""


@attrs.frozen(slots=True)
class ProbeResult:
    """One reading of the servers (None: not read -- the server is down, or there is
    no DSN).

    :ivar redis_up: Redis answered PING.
    :ivar redis_ping_seconds: the PING's round trip.
    :ivar redis_error: why Redis did not answer.
    :ivar queue_depth: entries in the invalidation stream (``XLEN``: the backlog,
        since handled entries are deleted).
    :ivar queue_oldest_seconds: age of its oldest entry (0 when empty).
    :ivar queue_dead_letters: entries in the queue's dead-letter stream.
    :ivar postgres_up: PostgreSQL answered (None without a DSN).
    :ivar postgres_error: why it did not.
    :ivar postgres_standby: the server is a standby (read-only): the worker, ``db init``
        and the refreshes need the primary.
    :ivar outbox_backlog: committed changes waiting in ``thorbis.outbox``, parked ones
        included.
    :ivar outbox_oldest_seconds: age of the oldest (0 when empty).
    :ivar outbox_parked: of them, those parked in ``thorbis.parked_changes``: their
        Redis Cluster shard did not answer (:mod:`~thorbis_cache.postgres.parked`).
    :ivar outbox_dead_letters: rows in ``thorbis.outbox_dead_letters``.
    :ivar at: when it was read (epoch seconds).
    """

    redis_up: bool
    redis_ping_seconds: float | None = None
    redis_error: str | None = None
    queue_depth: int | None = None
    queue_oldest_seconds: float | None = None
    queue_dead_letters: int | None = None
    postgres_up: bool | None = None
    postgres_error: str | None = None
    postgres_standby: bool = False
    outbox_backlog: int | None = None
    outbox_oldest_seconds: float | None = None
    outbox_parked: int | None = None
    outbox_dead_letters: int | None = None
    at: float = attrs.field(factory=time.time)


class Probe(Collector):
    """Reads the server-side figures (:meth:`refresh`) and exports the last reading
    as gauges.

    :param store: the cache's Redis store.
    :param prefix: the cache prefix (where the invalidation queue's streams live).
    :param dsn: the PostgreSQL holding ``thorbis.outbox``; None leaves the outbox out.
    :param timeout: seconds each server gets to answer.
    :param namespace: metric name prefix.
    """

    def __init__(self, store: RedisStore, prefix: str, dsn: str | None = None, *,
                 timeout: float = 2.0, namespace: str = "thorbis_cache") -> None:
        self.store = store
        self.keys = QueueKeys.for_prefix(prefix)
        self.keys_prefix = prefix
        self.dsn = dsn
        self.timeout = timeout
        self.namespace = namespace
        self.last: ProbeResult | None = None

    async def examine(self, views: Sequence[ScheduledView] = (),
                      rules: Sequence[InvalidationRule] = ()) -> HealthReading:
        """Everything a health check reads: :meth:`refresh`, then (when the servers
        answered) Redis' topology, memory and policies, the views' freshness, the
        logical capture slots and whether every rule's table is captured.

        :param views: the materialized views whose freshness is reported (none: the
            check is left out).
        :param rules: the invalidation rules whose tables must be captured (none: the
            check is left out).
        """
        result = await self.refresh()
        topology = None
        if result.redis_up:
            topology = await read_topology(self.store, self.keys_prefix, self.timeout)
        views_read: tuple[ViewReport, ...] | None = None
        views_error = slots = incomplete = uncaptured = None
        if self.dsn is not None and result.postgres_up:
            views_read, views_error, slots, incomplete, uncaptured = \
                await self._postgres_state(views, rules)
        return HealthReading(result, topology, views_read, views_error, slots, incomplete,
                             uncaptured)

    async def _postgres_state(self, views: Sequence[ScheduledView],
                              rules: Sequence[InvalidationRule]) -> tuple[
            tuple[ViewReport, ...] | None, str | None, tuple[CaptureSlot, ...] | None,
            tuple[CaptureDrift, ...] | None, tuple[str, ...] | None]:
        assert self.dsn is not None
        conn = None
        try:
            async with asyncio.timeout(self.timeout):
                conn = await connection.connect(self.dsn)
                rows = await conn.fetch(_SLOTS, SLOT_MADE)
                slots = tuple([CaptureSlot(
                    r["slot_name"], r["wal_status"], bool(r["active"]),
                    await LogicalCapture(r["slot_name"].removeprefix("thorbis_"), ())
                    .backlog_bytes(conn), r["sync_state"]) for r in rows])
                incomplete = tuple(await drifted_captures(conn))
                uncaptured = tuple(await capture_problems(conn, rules, "any")) if rules \
                    else None
                if not views:
                    return None, None, slots, incomplete, uncaptured
                if not await history_exists(conn):
                    return None, ("thorbis.mv_state does not exist: run `thorbis-cache "
                                  "db migrate`"), slots, incomplete, uncaptured
                return tuple(await report(conn, views)), None, slots, incomplete, uncaptured
        except Exception as exc:  # any failure is the figure, named
            return None, _describe(exc), None, None, None
        finally:
            if conn is not None:
                conn.terminate()

    async def refresh(self) -> ProbeResult:
        """Read both servers now (concurrently); the result is also kept in
        :attr:`last` for :meth:`collect`."""
        redis, postgres = await asyncio.gather(self._redis(), self._postgres())
        self.last = attrs.evolve(redis, **postgres)
        return self.last

    async def _redis(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                await self.store.ping()
                ping = time.perf_counter() - started
                depth = int(await self.store.command("XLEN", self.keys.stream))
                dead = int(await self.store.command("XLEN", self.keys.dead))
                first = await self.store.command("XRANGE", self.keys.stream, "-", "+",
                                                 "COUNT", 1)
                oldest = 0.0
                if first:
                    seconds, micros = await self.store.command("TIME")
                    now_ms = int(seconds) * 1000 + int(micros) // 1000
                    entry_id = first[0][0]
                    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    oldest = max(0.0, (now_ms - int(str(entry_id).split("-")[0])) / 1000)
        except Exception as exc:  # any failure is the figure: Redis is not answering
            return ProbeResult(redis_up=False, redis_error=_describe(exc))
        return ProbeResult(redis_up=True, redis_ping_seconds=ping, queue_depth=depth,
                           queue_oldest_seconds=oldest, queue_dead_letters=dead)

    async def _postgres(self) -> dict[str, Any]:
        if self.dsn is None:
            return {}
        conn = None
        try:
            async with asyncio.timeout(self.timeout):
                conn = await connection.connect(self.dsn)
                row = await conn.fetchrow(_OUTBOX)
        except Exception as exc:  # any failure is the figure: PostgreSQL is not answering
            return {"postgres_up": False, "postgres_error": _describe(exc)}
        finally:
            if conn is not None:
                conn.terminate()
        return {"postgres_up": True, "postgres_standby": bool(row["standby"]),
                "outbox_backlog": int(row["backlog"]),
                "outbox_oldest_seconds": float(row["oldest"] or 0.0),
                "outbox_parked": int(row["parked"]),
                "outbox_dead_letters": int(row["dead"])}

    def describe(self) -> Iterator[Metric]:
        """Nothing (the gauges exist once a reading does)."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """Gauges of the last reading (none before the first)."""
        r = self.last
        if r is None:
            return
        ns = self.namespace
        yield _gauge(f"{ns}_redis_up", "1 when Redis answered PING at the last scrape",
                     float(r.redis_up))
        figures: list[tuple[str, str, float | int | bool | None]] = [
            ("redis_ping_seconds", "Round trip of a PING to Redis", r.redis_ping_seconds),
            ("queue_depth", "Jobs waiting in the invalidation queue (Redis Stream)",
             r.queue_depth),
            ("queue_oldest_seconds", "Age of the oldest job in the invalidation queue",
             r.queue_oldest_seconds),
            ("queue_dead_letters", "Jobs in the invalidation queue's dead letters",
             r.queue_dead_letters),
            ("postgres_up", "1 when PostgreSQL answered at the last scrape", r.postgres_up),
            ("outbox_backlog", "Committed changes waiting in thorbis.outbox, parked ones "
             "included", r.outbox_backlog),
            ("outbox_oldest_seconds", "Age of the oldest change waiting in thorbis.outbox "
             "or parked", r.outbox_oldest_seconds),
            ("outbox_parked", "Changes parked in thorbis.parked_changes: their Redis "
             "Cluster shard did not answer", r.outbox_parked),
            ("outbox_dead_letters", "Rows in thorbis.outbox_dead_letters",
             r.outbox_dead_letters),
        ]
        for name, doc, value in figures:
            if value is not None:
                yield _gauge(f"{ns}_{name}", doc, float(value))


# --------------------------------------------------------------------------- health reads

# The logical captures' slots; a capture's publication marked as having had its slot
# ($1) but without it is a slot lost (dropped while no worker ran, or not carried over by
# a failover): said as lost.
_SLOTS = """
SELECT s.slot_name, s.wal_status, s.active, r.sync_state
  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
 WHERE s.slot_type = 'logical' AND s.database = current_database()
   AND s.slot_name LIKE 'thorbis\\_%'
UNION ALL
SELECT p.pubname, 'lost', false, NULL FROM pg_publication p
 WHERE p.pubname LIKE 'thorbis\\_%'
   AND obj_description(p.oid, 'pg_publication') = $1
   AND NOT EXISTS (
       SELECT FROM pg_replication_slots s
        WHERE s.slot_name = p.pubname AND s.database = current_database())
 ORDER BY 1
"""


@attrs.frozen(slots=True)
class ReplicaState:
    """A replica of a master, as the master's ``INFO replication`` lists it.

    :ivar address: ``host:port``.
    :ivar state: ``online``, ``wait_bgsave``, ``send_bulk``...
    :ivar lag_s: seconds since the replica's last acknowledgement (INFO's ``lag``).
    :ivar behind_bytes: replication bytes it has not acknowledged yet.
    """

    address: str
    state: str
    lag_s: float | None
    behind_bytes: int | None


@attrs.frozen(slots=True)
class MasterState:
    """One master's ``INFO`` (every section of ``INFO default``), or why it was not read.

    :ivar address: ``host:port`` (the store's address on a single server).
    :ivar routing_key: a key of a slot it owns (what scripts to it are routed by).
    :ivar info: ``INFO`` fields by name (empty when it did not answer).
    :ivar replicas: its replicas.
    :ivar error: why ``INFO`` could not be read.
    """

    address: str
    routing_key: str
    info: dict[str, str] = attrs.field(factory=dict)
    replicas: tuple[ReplicaState, ...] = ()
    error: str | None = None

    def number(self, name: str) -> int | None:
        """An integer field of :attr:`info` (None when absent)."""
        value = self.info.get(name)
        return None if value is None else int(float(value))


@attrs.frozen(slots=True)
class SentinelState:
    """What the sentinels say of the service.

    :ivar answered: the sentinel that answered (``host:port``); None: none did.
    :ivar master: the master they name, ``host:port``.
    :ivar flags: the master's flags (``master``; ``s_down``/``o_down`` when down).
    :ivar replicas: each replica's address, flags and ``master-link-status``.
    :ivar sentinels: how many other sentinels the one that answered knows.
    :ivar quorum: the service's quorum.
    :ivar error: why no sentinel answered.
    """

    answered: str | None
    master: str | None = None
    flags: str = ""
    replicas: tuple[tuple[str, str, str], ...] = ()
    sentinels: int | None = None
    quorum: int | None = None
    error: str | None = None


@attrs.frozen(slots=True)
class TopologyReading:
    """How Redis is deployed and how each master is doing.

    :ivar kind: ``standalone``, ``cluster`` or ``sentinel``.
    :ivar masters: every master's state.
    :ivar cluster: ``CLUSTER INFO`` fields (Cluster only).
    :ivar sentinel: the sentinels' view (Sentinel only).
    :ivar error: why the topology could not be read.
    """

    kind: str
    masters: tuple[MasterState, ...] = ()
    cluster: dict[str, str] | None = None
    sentinel: SentinelState | None = None
    error: str | None = None


@attrs.frozen(slots=True)
class CaptureSlot:
    """A logical capture slot (``thorbis_*``) of the database.

    :ivar name: the slot.
    :ivar wal_status: ``reserved``, ``extended``, ``unreserved`` or ``lost``.
    :ivar active: a worker is streaming from it.
    :ivar backlog_bytes: WAL between its confirmed position and now
        (:meth:`LogicalCapture.backlog_bytes`).
    :ivar sync_state: the reading session's ``pg_stat_replication.sync_state``
        (``async``; ``sync``, ``potential`` or ``quorum`` when
        ``synchronous_standby_names`` matches it), None when none reads it or this role
        may not see it.
    """

    name: str
    wal_status: str | None
    active: bool
    backlog_bytes: int | None
    sync_state: str | None = None


@attrs.frozen(slots=True)
class HealthReading:
    """What a health check reads (:meth:`Probe.examine`); None: not read.

    :ivar probe: the scrape's figures (Redis PING, queue, PostgreSQL, outbox).
    :ivar topology: Redis' deployment and masters (None when Redis did not answer).
    :ivar views: the views' freshness (``mv status``'s lines).
    :ivar views_error: why it could not be read.
    :ivar slots: the logical capture slots (empty: none exists).
    :ivar incomplete: captured tables a migration changed under their rules
        (:func:`~thorbis_cache.postgres.capture_ddl.drifted_captures`; empty: none).
    :ivar uncaptured: one line per ruled table whose changes nothing captures (no
        enabled capture trigger, no live slot publishing it:
        :func:`~thorbis_cache.postgres.capture_check.capture_problems`; empty: none).
    """

    probe: ProbeResult
    topology: TopologyReading | None = None
    views: tuple[ViewReport, ...] | None = None
    views_error: str | None = None
    slots: tuple[CaptureSlot, ...] | None = None
    incomplete: tuple[CaptureDrift, ...] | None = None
    uncaptured: tuple[str, ...] | None = None


@functools.cache
def _info_script() -> Script:
    return Script("server_info", load_lua("server_info"))


def info_fields(text: object) -> dict[str, str]:
    """``INFO``'s ``name:value`` lines as a dict."""
    raw = text.decode() if isinstance(text, bytes) else str(text)
    fields = {}
    for line in raw.splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[name] = value.strip()
    return fields


def _replicas(info: dict[str, str]) -> tuple[ReplicaState, ...]:
    offset = int(info.get("master_repl_offset", "0") or 0)
    found = []
    for name, value in sorted(info.items()):
        if not (name.startswith("slave") and name[5:].isdigit()):
            continue
        part = dict(item.partition("=")[::2] for item in value.split(","))
        behind = max(0, offset - int(part["offset"])) if "offset" in part else None
        found.append(ReplicaState(f"{part.get('ip', '?')}:{part.get('port', '?')}",
                                  part.get("state", "?"),
                                  float(part["lag"]) if "lag" in part else None, behind))
    return tuple(found)


async def read_masters(store: RedisStore, prefix: str) -> list[MasterState]:
    """``INFO`` of every master (one on a single server or a Sentinel group): through
    a read-only script routed by a key of a slot each master owns, since a plain
    ``INFO`` on a Cluster client reaches one node only (as :mod:`..eviction` does).
    A master that does not answer is a :class:`MasterState` with the error.

    :raises CacheBackendError: the Cluster's slot map cannot be read.
    """
    keys = MetaKeys(prefix)
    masters: dict[str, str] = {}
    if store.is_cluster:
        for (first, _last), node in sorted((await store.cluster_slots()).items()):
            host, port = node["primary"][:2]
            host = host.decode() if isinstance(host, bytes) else str(host)
            masters.setdefault(f"{host}:{int(port)}", keys.registry_of_slot(int(first)))
    else:
        masters[store.address] = keys.registry_of_slot(0)
    states = []
    for address, key in masters.items():
        try:
            info = info_fields(await store.run(_info_script(), [key], ["default"]))
        except Exception as exc:  # one master down is a figure of that master
            states.append(MasterState(address, key, error=_describe(exc)))
            continue
        states.append(MasterState(address, key, info, _replicas(info)))
    return states


async def read_topology(store: RedisStore, prefix: str, within: float) -> TopologyReading:
    """The deployment's state (see :class:`TopologyReading`), each server given
    ``within`` seconds to answer; never raises."""
    address = store.redis_address
    kind = "cluster" if store.is_cluster else (
        "sentinel" if address is not None and address.topology is Topology.SENTINEL
        else "standalone")
    try:
        async with asyncio.timeout(within * 2):
            masters = tuple(await read_masters(store, prefix))
            cluster = sentinel = None
            if kind == "cluster":
                cluster = info_fields(_cluster_info_text(await store.command("CLUSTER INFO")))
            if kind == "sentinel" and address is not None:
                sentinel = await _read_sentinels(address, within)
    except Exception as exc:  # the figure: what could not be read
        return TopologyReading(kind, error=_describe(exc))
    return TopologyReading(kind, masters, cluster, sentinel)


def _cluster_info_text(reply: object) -> str:
    """redis-py parses ``CLUSTER INFO`` into a dict (or leaves the text): as text."""
    if isinstance(reply, dict):
        return "\n".join(f"{_text(k)}:{_text(v)}" for k, v in reply.items())
    return _text(reply)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(reply: object) -> dict[str, str]:
    """A flat ``[name, value, ...]`` reply (RESP2) or a map (RESP3) as a dict."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = list(reply) if isinstance(reply, list | tuple) else []
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


async def _read_sentinels(address: RedisAddress, within: float) -> SentinelState:
    """Ask the sentinels, in the URL's order, until one answers."""
    user = address.sentinel_options.get("sentinel_username") or ""
    password = address.sentinel_options.get("sentinel_password")
    auth = ""
    if user or password:
        auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@"
    errors = []
    for host, port in address.nodes:
        where = f"{host}:{port}"
        sentinel = RedisStore.from_url(f"redis://{auth}{host}:{port}/0", timeout=within,
                                       connect_timeout=within, multiplexed=False)
        try:
            async with sentinel, asyncio.timeout(within):
                master = _pairs(await sentinel.command("SENTINEL", "MASTER", address.service))
                replies = await sentinel.command("SENTINEL", "REPLICAS", address.service)
        except Exception as exc:  # try the next sentinel
            errors.append(f"{where}: {_describe(exc)}")
            continue
        replicas = tuple(
            (f"{r.get('ip', '?')}:{r.get('port', '?')}", r.get("flags", ""),
             r.get("master-link-status", "?"))
            for r in (_pairs(x) for x in replies or ()))
        return SentinelState(
            where, f"{master.get('ip', '?')}:{master.get('port', '?')}",
            master.get("flags", ""), replicas, int(master.get("num-other-sentinels", 0)),
            int(master.get("quorum", 0)))
    return SentinelState(None, error="; ".join(errors)[:600] or "no sentinel configured")


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = "no answer in time"
    return f"{type(exc).__name__}: {text}"[:300]
