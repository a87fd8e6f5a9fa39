"""Materialized-view refreshes as Prometheus metrics: attempts by view and outcome,
and refresh durations by view, counted from the outcomes the scheduler returns
(:class:`MeteredMvScheduler`; ``thorbis-cache worker`` runs one)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from thorbis_cache.cache.metrics import Histogram
from thorbis_cache.mv.refresh import RefreshOutcome
from thorbis_cache.mv.scheduler import MvScheduler

if TYPE_CHECKING:
    from thorbis_cache.app import CacheApp

__all__ = ["ATTEMPT_OUTCOMES", "REFRESH_BUCKETS", "MeteredMvScheduler", "MvRefreshMetrics"]

#: The outcomes of a refresh attempt, each a counter of every view.
ATTEMPT_OUTCOMES: tuple[str, ...] = ("ok", "failed", "skipped_locked")

#: Upper bounds (seconds) of the refresh duration histogram: 10 ms to 30 min.
REFRESH_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0)


class MvRefreshMetrics(Collector):
    """Refresh attempts by (view, outcome) and durations of the attempts that ran
    (``ok`` or ``failed``), by view.

    :param namespace: metric name prefix.
    """

    def __init__(self, namespace: str = "thorbis_cache") -> None:
        self.namespace = namespace
        self.attempts: dict[tuple[str, str], int] = {}
        self.durations: dict[str, Histogram] = {}

    def expect(self, views: Iterable[str]) -> None:
        """Export every attempt counter of ``views`` from 0, before any refresh: an
        alert on ``increase(...{outcome="failed"}[30m])`` sees nothing of a series born
        at 1, so a view's first failure after a worker started went unannounced (found
        as an operator would, with promtool)."""
        for view in views:
            for outcome in ATTEMPT_OUTCOMES:
                self.attempts.setdefault((view, outcome), 0)

    def observe(self, outcomes: Iterable[RefreshOutcome]) -> None:
        """Count refresh outcomes (``not_due`` ones are not attempts and are skipped)."""
        for o in outcomes:
            if o.outcome == "not_due":
                continue
            slot = (o.view, o.outcome)
            self.attempts[slot] = self.attempts.get(slot, 0) + 1
            if o.outcome in ("ok", "failed"):
                histogram = self.durations.get(o.view)
                if histogram is None:
                    histogram = self.durations[o.view] = Histogram(REFRESH_BUCKETS)
                histogram.observe(o.duration_ms / 1000.0)

    def collect(self) -> Iterator[Metric]:
        """The refresh counters and duration histograms (called at scrape time)."""
        ns = self.namespace
        attempts = CounterMetricFamily(
            f"{ns}_mv_refreshes", "Materialized-view refresh attempts by view and outcome "
            "(ok, failed, skipped_locked: another worker held the view)",
            labels=["view", "outcome"])
        for (view, outcome), count in sorted(self.attempts.items()):
            attempts.add_metric([view, outcome], count)
        yield attempts
        durations = HistogramMetricFamily(
            f"{ns}_mv_refresh_seconds", "Duration of materialized-view refreshes that ran "
            "(ok or failed), by view", labels=["view"])
        for view, histogram in sorted(self.durations.items()):
            durations.add_metric([view], histogram.cumulative(), histogram.sum)
        yield durations


class MeteredMvScheduler(MvScheduler):
    """An :class:`~thorbis_cache.mv.scheduler.MvScheduler` whose every tick's
    outcomes are counted in :attr:`refresh_metrics`.

    :param refresh_metrics: where they are counted (a fresh one by default).
    :param options: as for :class:`~thorbis_cache.mv.scheduler.MvScheduler`.
    """

    def __init__(self, *args: Any, refresh_metrics: MvRefreshMetrics | None = None,
                 **options: Any) -> None:
        super().__init__(*args, **options)
        self.refresh_metrics = refresh_metrics or MvRefreshMetrics()
        self.refresh_metrics.expect(view.name for view in self.views)

    @classmethod
    def from_app(cls, app: CacheApp, dsn: str, **options: Any) -> MeteredMvScheduler:
        """See :meth:`MvScheduler.from_app`."""
        scheduler = super().from_app(app, dsn, **options)
        assert isinstance(scheduler, MeteredMvScheduler)
        return scheduler

    async def tick(self) -> list[RefreshOutcome]:
        """:meth:`MvScheduler.tick`, its outcomes counted."""
        outcomes = await super().tick()
        self.refresh_metrics.observe(outcomes)
        return outcomes
