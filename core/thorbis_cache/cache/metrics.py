"""In-process counters of the cache path, exported with prometheus-client.

Nothing here talks to Redis, and a hit costs one integer increment on a slotted object:
no lock, no label lookup. The counters are turned into Prometheus samples only when the
registry is scraped (a custom collector). Labels are bounded: the schema name (a
registered, finite set) and, for corrupt entries, a reason from a fixed vocabulary.
Tenants are deliberately not a label (unbounded cardinality).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from thorbis_cache.cache.keys import CacheKey

__all__ = [
    "COHERENCE_COUNTERS",
    "COUNTERS",
    "LATENCY_BUCKETS",
    "CacheMetrics",
    "CacheObserver",
    "CoherenceCounters",
    "Histogram",
    "SchemaCounters",
]

#: Upper bounds (seconds) of the latency histograms: 50 us (a near-cache hit) to 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

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
    "oversized_loads": "Loaded values larger than max_value_size, served without caching",
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
    oversized_loads: int
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


class Histogram:
    """A latency histogram kept as plain ints: one ``bisect`` and two additions per
    observation, no lock (asyncio runs it on one thread). Exported at scrape time
    by the observability collectors as a Prometheus histogram.

    :param buckets: sorted upper bounds in seconds (``+Inf`` is implicit).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"histogram buckets must be increasing, got {buckets!r}")
        #: observations per bucket (not cumulative); the last one is ``+Inf``
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation of ``seconds``."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus exposes them, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts):
            running += n
            out.append((bound, running))
        return out


class CacheObserver(Protocol):
    """What the cache calls on its read path when a host turns per-operation metrics
    on (``Cache.observer``; :class:`thorbis_cache.observability.OperationObserver`
    implements it). With no observer the read path does not call anything; with one,
    it reads the clock around the Redis part of the operation and reports the duration
    (a wrapping coroutine would cost a hit more than the recording itself)."""

    def observe(self, key: CacheKey[Any], operation: str, seconds: float) -> None:
        """Record one ``operation`` on ``key`` that took ``seconds``: its duration under
        the key's schema and its tenant's traffic."""
        ...

    def failed(self, key: CacheKey[Any], operation: str, error: BaseException,
               seconds: float) -> None:
        """Record one ``operation`` on ``key`` that raised ``error`` after ``seconds``
        (counted by error class, and observed as :meth:`observe` does)."""
        ...
