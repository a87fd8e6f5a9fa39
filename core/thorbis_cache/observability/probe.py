"""What is read from the servers at scrape time: Redis reachability and PING latency,
the invalidation queue's depth, age and dead letters, and the outbox's backlog, age
and dead letters.

These figures live in Redis and PostgreSQL, not in the process, so they are read once
per scrape (and per ``/health`` call) by :meth:`Probe.refresh`, which an ASGI handler
awaits before the synchronous Prometheus collection reads the snapshot. Nothing is
written. Every read is bounded by ``timeout``; a server that does not answer is a
figure (``up`` 0 and the error), never an exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import attrs
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from thorbis_cache.invalidation.queue import QueueKeys
from thorbis_cache.postgres import outbox
from thorbis_cache.redis_store import RedisStore

__all__ = ["Probe", "ProbeResult"]

_OUTBOX = """
SELECT (SELECT count(*) FROM thorbis.outbox) AS backlog,
       (SELECT extract(epoch FROM clock_timestamp() - min(created_at))::float8
          FROM thorbis.outbox) AS oldest,
       (SELECT count(*) FROM thorbis.outbox_dead_letters) AS dead
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
    :ivar outbox_backlog: committed changes waiting in ``thorbis.outbox``.
    :ivar outbox_oldest_seconds: age of the oldest (0 when empty).
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
    outbox_backlog: int | None = None
    outbox_oldest_seconds: float | None = None
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
        self.dsn = dsn
        self.timeout = timeout
        self.namespace = namespace
        self.last: ProbeResult | None = None

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
                conn = await outbox.connect(self.dsn)
                row = await conn.fetchrow(_OUTBOX)
        except Exception as exc:  # any failure is the figure: PostgreSQL is not answering
            return {"postgres_up": False, "postgres_error": _describe(exc)}
        finally:
            if conn is not None:
                conn.terminate()
        return {"postgres_up": True, "outbox_backlog": int(row["backlog"]),
                "outbox_oldest_seconds": float(row["oldest"] or 0.0),
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
            ("outbox_backlog", "Committed changes waiting in thorbis.outbox",
             r.outbox_backlog),
            ("outbox_oldest_seconds", "Age of the oldest change waiting in thorbis.outbox",
             r.outbox_oldest_seconds),
            ("outbox_dead_letters", "Rows in thorbis.outbox_dead_letters",
             r.outbox_dead_letters),
        ]
        for name, doc, value in figures:
            if value is not None:
                yield _gauge(f"{ns}_{name}", doc, float(value))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        text = "no answer in time"
    return f"{type(exc).__name__}: {text}"[:300]
