"""In-process counters of the cache path, exported with prometheus-client.

Nothing here talks to Redis: a hit costs one counter increment in memory. Labels are
bounded: the schema name (a registered, finite set) and, for corrupt entries, a reason
from a fixed vocabulary. Tenants are deliberately not a label (unbounded cardinality).
"""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry, Counter

__all__ = ["CacheMetrics", "SchemaCounters"]


@attrs.frozen(slots=True)
class SchemaCounters:
    """The counters of one schema, bound once so the hot path does no label lookup."""

    hits: Counter
    misses: Counter
    loads: Counter
    load_errors: Counter
    coalesced: Counter
    lease_waits: Counter
    lease_timeouts: Counter
    fills_rejected: Counter
    early_recomputes: Counter
    degraded_loads: Counter


class CacheMetrics:
    """The cache's Prometheus metrics in their own registry (one per cache object, so
    several caches in one process -- tests, multi-app hosts -- never collide).

    :param registry: where to register; a fresh :class:`CollectorRegistry` by default.
    :param namespace: metric name prefix.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, namespace: str = "thorbis_cache"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("schema",)

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels + extra, namespace=namespace, registry=self.registry)

        self._hits = counter("hits", "Reads answered from Redis")
        self._misses = counter("misses", "Reads that found no usable entry")
        self._loads = counter("loads", "Loader calls made by get_or_load")
        self._load_errors = counter("load_errors", "Loader calls that raised")
        self._coalesced = counter(
            "coalesced", "get_or_load calls that joined an in-process load of the same key"
        )
        self._lease_waits = counter("lease_waits", "Misses that waited for another filler")
        self._lease_timeouts = counter(
            "lease_timeouts", "Waits that gave up and loaded without caching"
        )
        self._fills_rejected = counter(
            "fills_rejected",
            "Fills refused because the key was invalidated while loading (stale set prevented)",
        )
        self._early = counter("early_recomputes", "Probabilistic early recomputations (XFetch)")
        self._degraded = counter(
            "degraded_loads", "Loads served straight from the loader because Redis was unavailable"
        )
        self.corrupt = counter(
            "corrupt_entries", "Entries that did not open or decode; deleted", ("reason",)
        )
        self._bound: dict[str, SchemaCounters] = {}

    def for_schema(self, schema: str) -> SchemaCounters:
        """The bound counters of ``schema``."""
        bound = self._bound.get(schema)
        if bound is None:
            bound = SchemaCounters(
                hits=self._hits.labels(schema),
                misses=self._misses.labels(schema),
                loads=self._loads.labels(schema),
                load_errors=self._load_errors.labels(schema),
                coalesced=self._coalesced.labels(schema),
                lease_waits=self._lease_waits.labels(schema),
                lease_timeouts=self._lease_timeouts.labels(schema),
                fills_rejected=self._fills_rejected.labels(schema),
                early_recomputes=self._early.labels(schema),
                degraded_loads=self._degraded.labels(schema),
            )
            self._bound[schema] = bound
        return bound

    def value(self, name: str, **labels: str) -> float:
        """Current value of counter ``name`` (without namespace) for ``labels``; 0 if unset."""
        got = self.registry.get_sample_value(f"thorbis_cache_{name}_total", labels)
        return got or 0.0
