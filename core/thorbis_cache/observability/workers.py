"""The background processes' in-process figures as Prometheus metrics: the outbox
worker (:class:`~thorbis_cache.invalidation.worker.WorkerMetrics`), the invalidation queue's
consumer (:class:`~thorbis_cache.invalidation.queue.QueueCounters`) and what its jobs
invalidated (:class:`CountingInvalidator`). Read at scrape time; nothing is added to
the work itself beyond the integer increments those objects already make.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from thorbis_cache.invalidation.queue import InvalidationJob, Invalidator, QueueCounters
from thorbis_cache.invalidation.worker import WorkerMetrics

__all__ = ["CountingInvalidator", "InvalidationsCollector", "QueueCollector", "WorkerCollector"]

#: WorkerMetrics counter -> (metric name without namespace, help).
_WORKER_COUNTERS: dict[str, tuple[str, str]] = {
    "batches": ("worker_batches", "Outbox batches applied and committed"),
    "failed_batches": ("worker_failed_batches",
                       "Outbox batches rolled back (Redis or PostgreSQL unavailable, "
                       "an invalidation error); their changes come back"),
    "processed": ("worker_changes", "Captured changes applied (keys and tags invalidated)"),
    "dead_lettered": ("worker_dead_letters",
                      "Captured changes dead-lettered (thorbis.outbox_dead_letters)"),
    "redis_waits": ("worker_redis_waits", "Redis outages the worker waited out"),
    "redis_probes": ("worker_redis_probes", "PINGs sent while waiting for Redis"),
    "parked": ("worker_parked_changes", "Changes parked (thorbis.parked_changes): their "
               "Cluster shard did not answer while others did"),
    "parked_applied": ("worker_parked_applied", "Parked changes applied once their "
                       "Cluster shard answered again"),
    "parked_tries": ("worker_parked_tries", "Tries of a tenant's parked changes that found "
                     "its Cluster shard still away (the next try backs off)"),
    "capture_losses": ("worker_capture_losses",
                       "Times change capture lost track (a replication slot lost, or the "
                       "database on a new timeline after a failover or restore): every "
                       "tag the rules reach flushed"),
    "replica_echoes": ("worker_replica_echoes",
                       "Batches invalidated again once every standby had replayed them, "
                       "so that a reader on a replica cannot cache the old row"),
    "bulk_transactions": ("worker_bulk_transactions",
                          "Transactions of more watched changes than logical capture holds "
                          "for a commit, invalidated by tenant instead of by row"),
    "incomplete_changes": ("worker_incomplete_changes",
                           "Captured changes lacking a column their rules read (renamed "
                           "or dropped by a migration), applied through schema tags"),
}

_QUEUE_OUTCOMES = ("processed", "failed", "retried", "claimed", "dead_lettered",
                   "malformed", "lost")


class WorkerCollector(Collector):
    """The outbox worker's counters, lag and commit->invalidated latency.

    :param metrics: the worker's :attr:`OutboxWorker.metrics
        <thorbis_cache.invalidation.worker.OutboxWorker.metrics>`.
    :param namespace: metric name prefix.
    """

    def __init__(self, metrics: WorkerMetrics, namespace: str = "thorbis_cache") -> None:
        self.metrics = metrics
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        """Samples of the worker's figures (called at scrape time)."""
        m, ns = self.metrics, self.namespace
        for attribute, (name, doc) in _WORKER_COUNTERS.items():
            yield CounterMetricFamily(f"{ns}_{name}", doc, value=getattr(m, attribute))
        yield CounterMetricFamily(f"{ns}_worker_redis_wait_seconds",
                                  "Time spent waiting for an unavailable Redis",
                                  value=m.redis_wait_seconds)
        yield GaugeMetricFamily(f"{ns}_worker_lag_seconds",
                                "Age of the oldest change of the last non-empty batch "
                                "when it was claimed", value=m.lag_seconds)
        yield GaugeMetricFamily(f"{ns}_worker_uncaptured_tables",
                                "Tables of invalidation rules that nothing captured, or whose "
                                "capture triggers were made for other rules, at the running "
                                "worker's last check (their entries stay stale)",
                                value=m.uncaptured_tables)
        yield GaugeMetricFamily(f"{ns}_worker_standby",
                                "1 while another worker reads the logical capture's slot "
                                "and this one stands by to take it over, else 0",
                                value=m.standby)
        yield GaugeMetricFamily(f"{ns}_worker_lacking_rules",
                                "Rules the database's capture was set up for that this "
                                "worker does not have (a newer release's db init): applied "
                                "by tag until it runs that release", value=m.lacking_rules)
        latency = m.commit_latency
        histogram = HistogramMetricFamily(
            f"{ns}_worker_commit_to_invalidated_seconds",
            "Per applied change: seconds from its capture (outbox insert, or commit under "
            "logical capture) to the commit of the batch that deleted its keys")
        histogram.add_metric([], latency.cumulative(), latency.sum)
        yield histogram


class CountingInvalidator:
    """An :class:`~thorbis_cache.invalidation.queue.Invalidator` that counts what the
    jobs it applies invalidate (keys, tags, cascading jobs), then hands them on.

    :param inner: the invalidator that does the work (``CacheInvalidator``).
    """

    def __init__(self, inner: Invalidator) -> None:
        self.inner = inner
        self.keys = 0
        self.tags = 0
        self.cascades = 0

    async def apply(self, job: InvalidationJob) -> None:
        """Apply ``job`` through the inner invalidator; count it once it succeeded."""
        await self.inner.apply(job)
        self.keys += len(job.keys)
        self.tags += len(job.tags)
        self.cascades += job.cascade


class QueueCollector(Collector):
    """The invalidation queue consumer's counters.

    :param counters: the queue's :attr:`InvalidationQueue.counters
        <thorbis_cache.invalidation.queue.InvalidationQueue.counters>`.
    :param namespace: metric name prefix.
    """

    def __init__(self, counters: QueueCounters, namespace: str = "thorbis_cache") -> None:
        self.counters = counters
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        """Samples of the queue's figures (called at scrape time)."""
        c, ns = self.counters, self.namespace
        jobs = CounterMetricFamily(
            f"{ns}_queue_jobs", "Invalidation queue deliveries by outcome (processed, "
            "failed, retried, claimed from a dead consumer, dead_lettered, malformed, lost "
            "to MAXLEN)", labels=["outcome"])
        for outcome in _QUEUE_OUTCOMES:
            jobs.add_metric([outcome], getattr(c, outcome))
        yield jobs
        yield CounterMetricFamily(f"{ns}_queue_backend_errors",
                                  "Redis errors met by the queue consumer's loop",
                                  value=c.backend_errors)


class InvalidationsCollector(Collector):
    """Invalidations made in this process, by source and kind, as one metric family.

    :param worker: the outbox worker's figures (keys and tags of captured changes).
    :param queue: the counting handler of the queue's jobs (keys, tags, cascades).
    :param namespace: metric name prefix.
    """

    def __init__(self, worker: WorkerMetrics | None = None,
                 queue: CountingInvalidator | None = None,
                 namespace: str = "thorbis_cache") -> None:
        self.worker = worker
        self.queue = queue
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        """The invalidation counters (called at scrape time)."""
        family = CounterMetricFamily(
            f"{self.namespace}_invalidations", "Invalidations made, by source (worker: "
            "captured changes; queue: queued jobs) and kind (keys, tags, cascades)",
            labels=["source", "kind"])
        if self.worker is not None:
            family.add_metric(["worker", "keys"], self.worker.keys_deleted)
            family.add_metric(["worker", "tags"], self.worker.tags_invalidated)
        if self.queue is not None:
            family.add_metric(["queue", "keys"], self.queue.keys)
            family.add_metric(["queue", "tags"], self.queue.tags)
            family.add_metric(["queue", "cascades"], self.queue.cascades)
        yield family
