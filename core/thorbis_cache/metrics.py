"""In-process counters of the cache path, exported with prometheus-client.

Nothing here talks to Redis, and a hit costs one integer increment on a slotted object:
no lock, no label lookup. The counters are turned into Prometheus samples only when the
registry is scraped (a custom collector). Labels are bounded: the schema name (a
registered, finite set) and, for corrupt entries, a reason from a fixed vocabulary.
Tenants are deliberately not a label (unbounded cardinality).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["COHERENCE_COUNTERS", "COUNTERS", "CacheMetrics", "CoherenceCounters", "SchemaCounters"]

#: Counter name -> help text. Every one exists per schema.
COUNTERS: dict[str, str] = {
    "hits": "Reads answered from Redis",
    "misses": "Reads that found no usable entry",
    "loads": "Loader calls made by get_or_load",
    "load_errors": "Loader calls that raised (other than MissingRow)",
    "absent_loads": "Loader calls that found no row (MissingRow)",
    "negative_hits": "Reads answered by a cached absence (negative_ttl), no loader called",
    "coalesced": "get_or_load calls that joined an in-process load of the same key",
    "lease_waits": "Misses that waited for another client's fill",
    "lease_timeouts": "Waits that gave up and loaded without caching",
    "fills_rejected": "Fills refused because the key was invalidated while loading "
    "(stale set prevented)",
    "early_recomputes": "Probabilistic early recomputations (XFetch)",
    "degraded_loads": "Loads served straight from the loader because Redis was unavailable",
    "near_hits": "Reads answered from the in-process near cache (L1)",
    "near_misses": "Reads of a near-cached schema that L1 could not answer",
}

#: Cache-wide counter name -> help text: the near cache and the invalidation events.
COHERENCE_COUNTERS: dict[str, str] = {
    "near_evictions": "L1 entries removed: invalidated, expired (near_ttl) or LRU-evicted",
    "near_flushes": "Whole-L1 flushes (event subscription lost or (re)established)",
    "events_published": "Invalidation events published for other processes",
    "event_publish_errors": "Invalidation events that could not be published (logged)",
    "events_received": "Invalidation events received from other processes",
}


class SchemaCounters:
    """The counters of one schema: plain ints, incremented in place on the hot path
    (``counters.hits += 1``). asyncio runs them on one thread, so no lock is needed."""

    __slots__ = (*COUNTERS, "corrupt")

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        #: corrupt entries by reason
        self.corrupt: dict[str, int] = {}

    # Declared for type checkers; the values are set in __init__.
    hits: int
    misses: int
    loads: int
    load_errors: int
    absent_loads: int
    negative_hits: int
    coalesced: int
    lease_waits: int
    lease_timeouts: int
    fills_rejected: int
    early_recomputes: int
    degraded_loads: int
    near_hits: int
    near_misses: int


class CoherenceCounters:
    """Cache-wide counters of the near cache and of invalidation events (plain ints)."""

    __slots__ = tuple(COHERENCE_COUNTERS)

    def __init__(self) -> None:
        for name in COHERENCE_COUNTERS:
            setattr(self, name, 0)

    near_evictions: int
    near_flushes: int
    events_published: int
    event_publish_errors: int
    events_received: int


class CacheMetrics(Collector):
    """The cache's counters, by schema, exposed to Prometheus in their own registry (one
    per cache object, so several caches in one process -- tests, multi-app hosts --
    never collide).

    :param registry: where to register; a fresh :class:`CollectorRegistry` by default.
    :param namespace: metric name prefix.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, namespace: str = "thorbis_cache"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        self._schemas: dict[str, SchemaCounters] = {}
        #: near cache and invalidation-event counters (not per schema)
        self.coherence = CoherenceCounters()
        self.registry.register(self)

    def for_schema(self, schema: str) -> SchemaCounters:
        """The counters of ``schema`` (created on first use)."""
        counters = self._schemas.get(schema)
        if counters is None:
            counters = self._schemas[schema] = SchemaCounters()
        return counters

    def corrupt(self, schema: str, reason: str) -> None:
        """Count an entry of ``schema`` that did not open, for ``reason``."""
        by_reason = self.for_schema(schema).corrupt
        by_reason[reason] = by_reason.get(reason, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Prometheus samples of every counter (called at scrape time)."""
        for name, doc in COUNTERS.items():
            family = CounterMetricFamily(f"{self.namespace}_{name}", doc, labels=["schema"])
            for schema, counters in self._schemas.items():
                family.add_metric([schema], getattr(counters, name))
            yield family
        for name, doc in COHERENCE_COUNTERS.items():
            family = CounterMetricFamily(f"{self.namespace}_{name}", doc)
            family.add_metric([], getattr(self.coherence, name))
            yield family
        family = CounterMetricFamily(
            f"{self.namespace}_corrupt_entries",
            "Entries that did not open or decode; deleted",
            labels=["schema", "reason"],
        )
        for schema, counters in self._schemas.items():
            for reason, count in counters.corrupt.items():
                family.add_metric([schema, reason], count)
        yield family

    def value(self, name: str, **labels: str) -> float:
        """Current value of counter ``name`` (without namespace) for ``labels``; 0 if unset."""
        got = self.registry.get_sample_value(f"{self.namespace}_{name}_total", labels)
        return got or 0.0
