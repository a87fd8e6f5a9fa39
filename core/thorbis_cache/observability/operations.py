"""Per-operation latency by key schema, errors, and tenant traffic: the cache's
optional observer (:attr:`Cache.observer <thorbis_cache.cache.core.Cache.observer>`).

Off by default: with ``cache.observer`` None the read path makes one ``is None`` check
and calls nothing. On, each ``get`` / ``get_or_load`` of a value schema that reaches
Redis (near-cache hits are answered before it, and counted per schema by
:class:`~thorbis_cache.cache.metrics.CacheMetrics`) costs two clock reads, one histogram
observation and one :meth:`TopTenants.add` (``bench/metrics_overhead.py`` measures it
against the hit with the observer off). Everything is exported at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from thorbis_cache.cache.keys import CacheKey
from thorbis_cache.cache.metrics import LATENCY_BUCKETS, Histogram
from thorbis_cache.errors import ThorbisCacheError
from thorbis_cache.observability.tenants import TopTenants

__all__ = ["OperationObserver"]


class OperationObserver(Collector):
    """Latency histograms per (schema, operation), errors per (schema, operation,
    error class) and operations per tenant (top N, the rest as ``other``).

    Attach it to a cache with ``cache.observer = observer`` and register it in the
    registry that is scraped (:class:`~thorbis_cache.observability.Exporter` does both).

    :param tenants: the tenant label tracker; ``TopTenants(20)`` by default.
    :param buckets: histogram upper bounds in seconds.
    :param namespace: metric name prefix.
    """

    def __init__(self, tenants: TopTenants | None = None, *,
                 buckets: tuple[float, ...] = LATENCY_BUCKETS,
                 namespace: str = "thorbis_cache") -> None:
        self.tenants = tenants if tenants is not None else TopTenants()
        self.buckets = buckets
        self.namespace = namespace
        self.histograms: dict[tuple[str, str], Histogram] = {}
        self.errors: dict[tuple[str, str, str], int] = {}

    def observe(self, key: CacheKey[Any], operation: str, seconds: float) -> None:
        """Record one ``operation`` on ``key`` that took ``seconds``: one histogram
        observation under its schema, one operation of its tenant."""
        self.tenants.add(key.tenant)
        pair = (key.schema.name, operation)
        histogram = self.histograms.get(pair)
        if histogram is None:
            histogram = self.histograms[pair] = Histogram(self.buckets)
        histogram.observe(seconds)

    def failed(self, key: CacheKey[Any], operation: str, error: BaseException,
               seconds: float) -> None:
        """Record one ``operation`` on ``key`` that raised ``error``: counted under its
        class (a thorbis-cache error) or ``other``, and observed as :meth:`observe`."""
        kind = type(error).__name__ if isinstance(error, ThorbisCacheError) else "other"
        slot = (key.schema.name, operation, kind)
        self.errors[slot] = self.errors.get(slot, 0) + 1
        self.observe(key, operation, seconds)

    def describe(self) -> Iterator[Metric]:
        """Nothing: registering must not run :meth:`collect` (it rebalances labels)."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """The histograms, error counts and per-tenant counts (rebalancing the tenant
        labels first)."""
        ns = self.namespace
        latency = HistogramMetricFamily(
            f"{ns}_operation_seconds",
            "Duration of cache reads that reached Redis, by key schema and operation",
            labels=["schema", "operation"])
        for (schema, operation), histogram in sorted(self.histograms.items()):
            latency.add_metric([schema, operation], histogram.cumulative(), histogram.sum)
        yield latency
        errors = CounterMetricFamily(
            f"{ns}_operation_errors",
            "Cache reads that raised, by key schema, operation and error class "
            "(thorbis-cache errors by name, anything else -- a loader's -- as other)",
            labels=["schema", "operation", "error"])
        for labels, count in sorted(self.errors.items()):
            errors.add_metric(list(labels), count)
        yield errors
        self.tenants.rebalance()
        tenants = CounterMetricFamily(
            f"{ns}_tenant_operations",
            f"Cache reads that reached Redis by tenant: the top {self.tenants.n} by "
            "traffic, the rest as other", labels=["tenant"])
        for tenant, count in sorted(self.tenants.counts().items()):
            tenants.add_metric([tenant], count)
        yield tenants
