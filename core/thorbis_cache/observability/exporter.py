"""One process's metrics in one registry: the cache's counters, the optional
per-operation observer, the server-side figures read at scrape time, and whatever
background work runs in the process (outbox worker, queue consumer, view scheduler).

::

    exporter = Exporter(app.cache, dsn=dsn)        # per-operation metrics on by default
    app_asgi = MetricsApp(exporter)                # /metrics and /health, for the host
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from thorbis_cache.cache.core import Cache
from thorbis_cache.invalidation.queue import InvalidationQueue, Invalidator
from thorbis_cache.invalidation.worker import OutboxWorker
from thorbis_cache.observability.health import HealthReport, HealthThresholds, assess
from thorbis_cache.observability.operations import OperationObserver
from thorbis_cache.observability.probe import Probe
from thorbis_cache.observability.tenants import TopTenants
from thorbis_cache.observability.transport import TransportCollector
from thorbis_cache.observability.views import MvRefreshMetrics
from thorbis_cache.observability.workers import (
    CountingInvalidator,
    InvalidationsCollector,
    QueueCollector,
    WorkerCollector,
)

__all__ = ["CONTENT_TYPE", "Exporter"]

#: Content type of :meth:`Exporter.render`: the Prometheus text format 0.0.4 that
#: ``generate_latest`` writes for our metric names, which every Prometheus 2.x reads
#: (prometheus-client >= 0.22 names its own constant ``version=1.0.0``).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Exporter:
    """The metrics and health of one process.

    :param cache: the cache whose counters are exported (and whose Redis is probed).
    :param dsn: PostgreSQL DSN: the outbox backlog and dead letters are read from it,
        and ``/health`` checks it; None leaves them out.
    :param operations: attach an :class:`OperationObserver` to ``cache`` (latency per
        schema and operation, tenant traffic); False leaves the read path untouched.
    :param top_tenants: tenants with a label of their own (the rest are ``other``).
    :param thresholds: where the health checks turn warning or unhealthy.
    :param probe_timeout: seconds each server gets to answer a scrape's reads.
    """

    def __init__(self, cache: Cache, *, dsn: str | None = None, operations: bool = True,
                 top_tenants: int = 20, thresholds: HealthThresholds | None = None,
                 probe_timeout: float = 2.0) -> None:
        self.cache = cache
        self.registry = CollectorRegistry()
        self.registry.register(cache.metrics)
        self.registry.register(TransportCollector(cache.store))
        self.operations: OperationObserver | None = None
        if operations:
            self.operations = OperationObserver(TopTenants(top_tenants))
            cache.observer = self.operations
            self.registry.register(self.operations)
        self.probe = Probe(cache.store, cache.settings.prefix, dsn, timeout=probe_timeout)
        self.registry.register(self.probe)
        self.thresholds = thresholds or HealthThresholds()
        self.invalidations = InvalidationsCollector()
        self.registry.register(self.invalidations)

    def add_worker(self, worker: OutboxWorker) -> None:
        """Export ``worker``'s batches, changes, dead letters, lag and latency."""
        self.invalidations.worker = worker.metrics
        self.registry.register(WorkerCollector(worker.metrics))

    def add_queue(self, queue: InvalidationQueue, handler: Invalidator) -> CountingInvalidator:
        """Export ``queue``'s consumer counters and what its jobs invalidate.

        :param handler: the invalidator its jobs go to.
        :returns: the handler to consume with (counts, then hands on to ``handler``).
        """
        counting = CountingInvalidator(handler)
        self.invalidations.queue = counting
        self.registry.register(QueueCollector(queue.counters))
        return counting

    def add_views(self, refresh_metrics: MvRefreshMetrics) -> None:
        """Export materialized-view refreshes (a
        :class:`~thorbis_cache.observability.views.MeteredMvScheduler`'s)."""
        self.registry.register(refresh_metrics)

    async def render(self) -> bytes:
        """The Prometheus text exposition, after reading the servers' figures."""
        await self.probe.refresh()
        return generate_latest(self.registry)

    async def health(self) -> HealthReport:
        """The health checks, from a fresh reading of the servers."""
        return assess(await self.probe.refresh(), self.thresholds)

    def detach(self) -> None:
        """Take the observer off the cache's read path (the read path calls nothing)."""
        if self.cache.observer is self.operations:
            self.cache.observer = None
