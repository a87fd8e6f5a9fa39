"""Recommendations computed from real figures, each with the number that triggered it.

``recommend(stats, metrics_text)`` reads a sample of the keys
(:func:`~thorbis_cache.observability.stats.sample_stats`) and a running process's
``/metrics`` text (either may be None; what needs the missing one is skipped):

* ``low_hit_ratio`` -- a schema's hits / (hits + misses) under ``hit_ratio`` (metrics);
* ``memory_pressure`` -- a master's ``used_memory`` over ``memory_ratio`` of
  ``maxmemory``; ``evictions`` -- ``evicted_keys`` above 0 (the sample's ``INFO``);
* ``uneven_access`` -- the busiest tenant's share of the reads over ``tenant_share``
  (``thorbis_cache_tenant_operations``, metrics);
* ``slow_operation`` -- the 99th percentile of a schema's operation over ``slow_p99``
  seconds (``thorbis_cache_operation_seconds``, metrics);
* ``ttl_too_long`` -- most sampled entries of a schema not read since written;
  ``ttl_too_short`` -- the entries that are read wait a large part of their TTL between
  reads (``OBJECT IDLETIME`` against the TTL left, the sample; not available under an
  LFU policy).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families

from thorbis_cache.observability.health import HitCounts
from thorbis_cache.observability.stats import KeyStats

__all__ = ["MetricsSnapshot", "Recommendation", "RecommendationThresholds", "quantile",
           "recommend"]


@attrs.frozen(slots=True)
class RecommendationThresholds:
    """Where a figure becomes a recommendation.

    :ivar hit_ratio: a schema's hit ratio under this ...
    :ivar min_reads: ... over at least this many reads.
    :ivar memory_ratio: ``used_memory / maxmemory`` of a master.
    :ivar tenant_share: the busiest tenant's share of the reads ...
    :ivar min_tenant_reads: ... over at least this many reads.
    :ivar slow_p99: seconds of a schema's operation's 99th percentile ...
    :ivar min_calls: ... over at least this many calls.
    :ivar unread_share: share of a schema's sampled entries not read since written.
    :ivar reuse_of_ttl: median idle time of read entries as a share of the TTL.
    :ivar min_judged: sampled entries of a schema needed to judge its TTL.
    """

    hit_ratio: float = 0.8
    min_reads: int = 100
    memory_ratio: float = 0.8
    tenant_share: float = 0.25
    min_tenant_reads: int = 100
    slow_p99: float = 0.05
    min_calls: int = 100
    unread_share: float = 0.5
    reuse_of_ttl: float = 0.5
    min_judged: int = 20


@attrs.frozen(slots=True)
class Recommendation:
    """One recommendation: what, about which subject, why (the figures), the advice.

    :ivar kind: ``low_hit_ratio``, ``memory_pressure``, ``evictions``,
        ``uneven_access``, ``slow_operation``, ``ttl_too_long``, ``ttl_too_short``.
    :ivar subject: the schema, master, tenant... it is about.
    :ivar message: the figure that triggered it and what to do.
    :ivar figures: those figures.
    """

    kind: str
    subject: str
    message: str
    figures: dict[str, Any] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return attrs.asdict(self)


@attrs.frozen(slots=True)
class MetricsSnapshot:
    """The figures of a ``/metrics`` text that recommendations use.

    :ivar hits: hits and misses by schema.
    :ivar tenant_reads: ``thorbis_cache_tenant_operations`` by tenant label.
    :ivar latency: ``(schema, operation)`` -> cumulative buckets ``[(le, count)]``.
    """

    hits: HitCounts
    tenant_reads: dict[str, float]
    latency: dict[tuple[str, str], list[tuple[float, float]]]

    @classmethod
    def from_text(cls, text: str, namespace: str = "thorbis_cache") -> MetricsSnapshot:
        """Parse a Prometheus text exposition.

        :raises ValueError: it is not one.
        """
        families = list(text_string_to_metric_families(text))
        tenants: dict[str, float] = {}
        latency: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for family in families:
            if family.name == f"{namespace}_tenant_operations":
                for s in family.samples:
                    if s.name.endswith("_total"):
                        tenant = s.labels.get("tenant", "")
                        tenants[tenant] = tenants.get(tenant, 0.0) + s.value
            elif family.name == f"{namespace}_operation_seconds":
                for s in family.samples:
                    if s.name.endswith("_bucket"):
                        where = (s.labels.get("schema", ""), s.labels.get("operation", ""))
                        latency.setdefault(where, []).append((float(s.labels["le"]), s.value))
        for buckets in latency.values():
            buckets.sort()
        return cls(HitCounts.from_families(families, namespace), tenants, latency)

    def hottest_schemas(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` schemas with the most reads (hits + misses), most first."""
        reads = {s: self.hits.hits.get(s, 0.0) + self.hits.misses.get(s, 0.0)
                 for s in {*self.hits.hits, *self.hits.misses}}
        return sorted(((s, r) for s, r in reads.items() if r), key=lambda x: -x[1])[:n]

    def hottest_tenants(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` tenants with a label of their own with the most reads."""
        return sorted(((t, r) for t, r in self.tenant_reads.items() if r),
                      key=lambda x: -x[1])[:n]


def quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly within the
    bucket (as PromQL's ``histogram_quantile``); None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: that bound, as PromQL
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def recommend(stats: KeyStats | None, metrics_text: str | None,
              thresholds: RecommendationThresholds | None = None) -> list[Recommendation]:
    """Recommendations from a sample and a ``/metrics`` text (see the module docstring).

    :raises ValueError: ``metrics_text`` is not a Prometheus text.
    """
    t = thresholds or RecommendationThresholds()
    found: list[Recommendation] = []
    ttls = {p.schema: p.ttl_s for p in stats.ttl} if stats is not None else {}
    if metrics_text is not None:
        snapshot = MetricsSnapshot.from_text(metrics_text)
        found += _hit_ratios(snapshot, ttls, t)
        found += _uneven(snapshot, t)
        found += _slow(snapshot, t)
    if stats is not None:
        found += _memory(stats, t)
        found += _ttl(stats, t)
    return found


def _hit_ratios(m: MetricsSnapshot, ttls: dict[str, float], t: RecommendationThresholds
                ) -> list[Recommendation]:
    found = []
    for schema in sorted({*m.hits.hits, *m.hits.misses}):
        hits, misses = m.hits.hits.get(schema, 0.0), m.hits.misses.get(schema, 0.0)
        reads = hits + misses
        if reads < t.min_reads or hits / reads >= t.hit_ratio:
            continue
        ratio = hits / reads
        ttl = f"its TTL ({ttls[schema]:.0f} s)" if schema in ttls else "its TTL"
        found.append(Recommendation(
            "low_hit_ratio", schema,
            f"hit ratio of {schema} is {ratio:.2f} over {int(reads)} reads ({int(hits)} "
            f"hits, {int(misses)} misses; under {t.hit_ratio}): check {ttl}, how broad "
            "its invalidations are, and whether a warmer fills it",
            {"hit_ratio": round(ratio, 4), "hits": int(hits), "misses": int(misses)}))
    return found


def _uneven(m: MetricsSnapshot, t: RecommendationThresholds) -> list[Recommendation]:
    total = sum(m.tenant_reads.values())
    named = [(tenant, n) for tenant, n in m.tenant_reads.items() if tenant != "other"]
    if total < t.min_tenant_reads or not named:
        return []
    tenant, reads = max(named, key=lambda x: x[1])
    share = reads / total
    if share < t.tenant_share:
        return []
    return [Recommendation(
        "uneven_access", tenant,
        f"tenant {tenant} made {share:.0%} of the reads ({int(reads)} of {int(total)}; over "
        f"{t.tenant_share:.0%}): its keys share one hash slot, so one Cluster master serves "
        "it; give its hottest schemas a near cache (near_ttl) or read_from_replicas",
        {"share": round(share, 4), "reads": int(reads), "total_reads": int(total)})]


def _slow(m: MetricsSnapshot, t: RecommendationThresholds) -> list[Recommendation]:
    found = []
    for (schema, operation), buckets in sorted(m.latency.items()):
        calls = buckets[-1][1] if buckets else 0.0
        p99 = quantile(buckets, 0.99)
        if calls < t.min_calls or p99 is None or p99 <= t.slow_p99:
            continue
        found.append(Recommendation(
            "slow_operation", f"{schema} {operation}",
            f"99th percentile of {operation} on {schema} is {p99 * 1000:.1f} ms over "
            f"{int(calls)} calls (over {t.slow_p99 * 1000:.0f} ms): look at its value size "
            "(stats memory / keys), compression, and Redis latency (health)",
            {"p99_seconds": round(p99, 6), "calls": int(calls)}))
    return found


def _memory(stats: KeyStats, t: RecommendationThresholds) -> list[Recommendation]:
    found = []
    biggest = next((g.name for g in stats.by_schema), None)
    for n in stats.nodes:
        used = int(float(n.info.get("used_memory", 0)))
        limit = int(float(n.info.get("maxmemory", 0)))
        evicted = int(float(n.info.get("evicted_keys", 0)))
        policy = n.info.get("maxmemory_policy", "?")
        if limit and used / limit >= t.memory_ratio:
            found.append(Recommendation(
                "memory_pressure", n.address,
                f"{n.address} uses {used / limit:.0%} of maxmemory ({used} of {limit} "
                f"bytes; over {t.memory_ratio:.0%}, policy {policy}): raise maxmemory or "
                f"lower the TTL of the largest schemas ({biggest})",
                {"used_memory": used, "maxmemory": limit, "ratio": round(used / limit, 4)}))
        if evicted:
            found.append(Recommendation(
                "evictions", n.address,
                f"{n.address} evicted {evicted} key(s) (policy {policy}): entries are dropped "
                "before their TTL; raise maxmemory or shorten TTLs",
                {"evicted_keys": evicted, "maxmemory_policy": policy}))
    return found


def _ttl(stats: KeyStats, t: RecommendationThresholds) -> list[Recommendation]:
    found = []
    for p in stats.ttl:
        if p.judged < t.min_judged or p.unread_share is None:
            continue
        if p.unread_share >= t.unread_share:
            found.append(Recommendation(
                "ttl_too_long", p.schema,
                f"{p.unread_share:.0%} of {p.judged} sampled {p.schema} entries were not read "
                f"since written (median age {p.median_age_s:.0f} s; over "
                f"{t.unread_share:.0%}): a TTL of {p.ttl_s:.0f} s keeps entries nobody "
                "reads; lower it, or stop caching what is read once",
                {"unread_share": round(p.unread_share, 4), "judged": p.judged,
                 "ttl_s": p.ttl_s, "median_age_s": p.median_age_s}))
        elif p.median_idle_read_s is not None \
                and p.median_idle_read_s >= t.reuse_of_ttl * p.ttl_s:
            found.append(Recommendation(
                "ttl_too_short", p.schema,
                f"read {p.schema} entries wait a median {p.median_idle_read_s:.0f} s between "
                f"reads, {p.median_idle_read_s / p.ttl_s:.0%} of their TTL ({p.ttl_s:.0f} s; "
                f"over {t.reuse_of_ttl:.0%}): many expire before the next read; raise the "
                "TTL (invalidation keeps them correct)",
                {"median_idle_s": p.median_idle_read_s, "ttl_s": p.ttl_s,
                 "judged": p.judged}))
    return found
