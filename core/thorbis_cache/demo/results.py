"""What a demo run yields: its measurements and checks, or a :class:`DemoFailure`."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from thorbis_cache.demo.data import DemoOptions
from thorbis_cache.errors import ThorbisCacheError

if TYPE_CHECKING:
    # Annotations only: this module loads without the plugin installed.
    from thorbis_home_services import CustomerSummary, NextService, RankedWorkOrder

__all__ = [
    "Check",
    "DataResult",
    "DemoFailure",
    "DemoResult",
    "EncryptionResult",
    "LatencySummary",
    "OutboxResult",
    "PluginResult",
    "RaceResult",
    "TamperResult",
    "VerticalResult",
    "VerticalsResult",
    "WorkloadResult",
]


class DemoFailure(ThorbisCacheError, RuntimeError):
    """The demo could not run a scene, or one of its checks failed."""


@attrs.frozen(slots=True)
class Check:
    """One claim of the demo and whether this run bore it out."""

    name: str
    passed: bool
    detail: str = ""


@attrs.frozen(slots=True)
class LatencySummary:
    """Latency percentiles (nearest rank) of one class of calls, in nanoseconds."""

    count: int
    p50_ns: int | None
    p99_ns: int | None

    @classmethod
    def of(cls, samples: Sequence[int]) -> LatencySummary:
        """Summarize ``samples`` (ns); percentiles are None when there are none."""
        if not samples:
            return cls(0, None, None)
        ordered = sorted(samples)

        def rank(p: float) -> int:
            return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

        return cls(len(ordered), rank(50), rank(99))


@attrs.frozen(slots=True)
class DataResult:
    """The plugin's data set as loaded, and its views as refreshed.

    :ivar tenants: the tenants generated (``thorbis_home_services.datagen``).
    :ivar rows: rows per ``hs`` table.
    :ivar load_s: generating and COPYing them.
    :ivar views: the materialized views refreshed (plain ``REFRESH``, once).
    :ivar refresh_s: refreshing them.
    """

    tenants: tuple[str, ...]
    rows: dict[str, int]
    load_s: float
    views: tuple[str, ...]
    refresh_s: float


@attrs.frozen(slots=True)
class PluginResult:
    """The plugin as ``CacheApp`` loaded it, and two of its patterns run for one tenant.

    :ivar declared: how many schemas, patterns, views, rules, warmers and permissions
        it registered.
    :ivar start_s: ``CacheApp.start``: plugin loaded and validated, its SQL and views
        applied, its rules checked against the database, the cache built.
    :ivar warmed: entries the warmer wrote (work orders and status lists).
    :ivar board: ``hs.high_priority_work_orders`` as returned.
    :ivar history: the customer's completed services (work order id, completed at),
        as read from PostgreSQL and written as the ``hs.customer_history`` time series.
    :ivar prediction: ``hs.predicted_next_service`` as returned.
    """

    name: str
    distribution: str | None
    version: str | None
    namespace: str
    hook_api_version: int
    declared: dict[str, int]
    start_s: float
    tenant: str
    warmer: str
    warmed: int
    warm_s: float
    board_pattern: str
    board_limit: int
    board: tuple[RankedWorkOrder, ...]
    board_s: float
    predict_pattern: str
    customer_id: int
    history: tuple[tuple[int, dt.datetime], ...]
    prediction: NextService | None
    predict_s: float
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class WorkloadResult:
    """The Zipf read workload, measured.

    :ivar hits: calls answered from Redis with no load involved.
    :ivar misses: calls whose own loader ran (one PostgreSQL query each).
    :ivar coalesced: calls that found no value but waited for a concurrent load of the
        same key instead of querying (single-flight / lease).
    :ivar warm_get_latency: measured right after the workload, on the same client and
        concurrency, over the workload's first keys (all cached by then): ``cache.get``
        alone, i.e. GET + decrypt + decode with no misses queueing beside it.
    :ivar raw_get_latency: the anchor for it: a plain GET of the same stored bytes (no
        decryption, no decoding), i.e. what Redis itself costs on this machine.
    :ivar metrics: the cache's own counters for the schema after the workload.
    """

    reads: int
    hits: int
    misses: int
    coalesced: int
    db_queries: int
    distinct_keys: int
    elapsed_s: float
    hit_latency: LatencySummary
    miss_latency: LatencySummary
    coalesced_latency: LatencySummary
    warm_get_latency: LatencySummary
    raw_get_latency: LatencySummary
    metrics: dict[str, float]

    @property
    def hit_ratio(self) -> float:
        """Share of reads answered from the cache without waiting for a load."""
        return self.hits / self.reads

    @property
    def queries_saved(self) -> int:
        """Reads that did not query PostgreSQL."""
        return self.reads - self.db_queries


@attrs.frozen(slots=True)
class EncryptionResult:
    """One encrypted entry as stored in Redis."""

    redis_key: str
    raw: bytes
    key_id: str
    summary: CustomerSummary
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class TamperResult:
    """A flipped byte, and a ciphertext moved to another tenant's key."""

    redis_key: str
    flipped_offset: int
    corrupt_reason: str
    corrupt_delta: float
    cross_tenant_key: str
    cross_tenant_corrupt_delta: float
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class RaceResult:
    """A slow fill of a work order racing with an UPDATE of its priority and the
    invalidation of its entry (priorities as their text values)."""

    redis_key: str
    work_order_id: int
    stale_priority: str
    updated_priority: str
    slow_caller_priority: str
    fills_rejected_delta: float
    fresh_priority: str
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class OutboxResult:
    """A committed UPDATE of a customer turned into invalidations by the outbox worker.

    :ivar tables: the tables the capture triggers were installed on.
    :ivar redis_key: the customer hash.
    :ivar summary_key: the customer's summary entry (kept by the UPDATE, dropped by the
        view's refresh).
    :ivar old_status: / :ivar new_status: the account status before and after.
    :ivar gone_ms: from the UPDATE's commit to the hash seen gone; None if it never went.
    :ivar reloaded_status: the account status the next read loaded.
    :ivar audit_records: records on the audit chain afterwards.
    """

    tables: tuple[str, ...]
    redis_key: str
    summary_key: str
    customer_id: int
    old_status: str
    new_status: str
    gone_ms: float | None
    reloaded_status: str
    audit_records: int
    checks: tuple[Check, ...]


@attrs.frozen(slots=True)
class VerticalResult:
    """What one vertical did in the scene.

    :ivar plugin: the plugin's entry-point name.
    :ivar title: its human name.
    :ivar rows: rows its data set wrote.
    :ivar reads: reads of the concurrent pass; :ivar reads_per_s: its throughput;
        :ivar hits: / :ivar misses: counted on its schemas during it.
    :ivar latency: latency of one read when the same reads are replayed one at a time
        (all hits).
    :ivar read_mix: what was read, with counts.
    :ivar changes: changes committed; :ivar verified: those seen through the cache after
        the worker ran.
    :ivar keys_invalidated: keys of its schemas the worker deleted.
    :ivar tags_invalidated: (tenant, tag) pairs of its tags the worker invalidated.
    :ivar refreshes: ok view refreshes by trigger.
    :ivar failed_refreshes: view refreshes that failed.
    :ivar checks: the scene's claims about this vertical.
    :ivar write_changes: changes committed during the reads-under-writes phase;
        :ivar view_hits: / :ivar view_misses: lookups of its view-backed schemas
        (``KeySchema.mirrors``) then, :ivar other_hits: / :ivar other_misses: of the
        others.
    """

    plugin: str
    title: str
    rows: int
    reads: int
    reads_per_s: float
    hits: int
    misses: int
    latency: LatencySummary
    read_mix: tuple[tuple[str, int], ...]
    changes: int
    verified: int
    keys_invalidated: int
    tags_invalidated: int
    refreshes: tuple[tuple[str, int], ...]
    failed_refreshes: int
    checks: tuple[Check, ...]
    write_changes: int = 0
    view_hits: int = 0
    view_misses: int = 0
    other_hits: int = 0
    other_misses: int = 0

    @property
    def view_hit_ratio(self) -> float | None:
        """Hits of view-backed entries under writes (None without such a lookup)."""
        total = self.view_hits + self.view_misses
        return self.view_hits / total if total else None

    @property
    def other_hit_ratio(self) -> float | None:
        """Hits of the other entries under writes (None without such a lookup)."""
        total = self.other_hits + self.other_misses
        return self.other_hits / total if total else None

    @property
    def hit_ratio(self) -> float:
        """Hits over hits and misses of the vertical's schemas (0 with no lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@attrs.frozen(slots=True)
class VerticalsResult:
    """The scene: its tenants and one result per vertical."""

    tenants: tuple[str, ...]
    verticals: tuple[VerticalResult, ...]
    seconds: float

    @property
    def checks(self) -> tuple[Check, ...]:
        """Every vertical's checks."""
        return tuple(c for v in self.verticals for c in v.checks)


@attrs.frozen(slots=True)
class DemoResult:
    """Everything the demo measured and checked."""

    options: DemoOptions
    redis_address: str
    postgres_address: str
    setup_s: float
    data: DataResult
    plugin: PluginResult
    workload: WorkloadResult
    encryption: EncryptionResult
    tamper: TamperResult
    race: RaceResult
    outbox: OutboxResult
    verticals: VerticalsResult

    @property
    def checks(self) -> tuple[Check, ...]:
        """Every check of every scene."""
        return (self.plugin.checks + self.encryption.checks + self.tamper.checks
                + self.race.checks + self.outbox.checks + self.verticals.checks)

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)
