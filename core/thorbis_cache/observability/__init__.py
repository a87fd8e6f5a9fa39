"""Operations: metrics a Prometheus scrapes, and health.

* :class:`Exporter` -- one process's metrics (the cache's counters, per-operation
  latency by schema, tenant traffic with bounded labels, the servers' backlogs, the
  worker's, queue's and view scheduler's figures) and health;
* :class:`MetricsApp` -- ``/metrics`` and ``/health`` as a plain ASGI application;
* :class:`HttpServer` -- a small asyncio HTTP server for it (``thorbis-cache serve``,
  ``thorbis-cache worker --metrics-port``);
* :class:`TopTenants` -- tenants as labels, the top N by traffic and ``other``.

Every metric is listed in ``docs/operations.md``. Nothing here writes to Redis, and the
cache's read path calls into it only when an :class:`OperationObserver` is attached.
"""

from __future__ import annotations

from thorbis_cache.observability.asgi import MetricsApp
from thorbis_cache.observability.exporter import CONTENT_TYPE, Exporter
from thorbis_cache.observability.health import Check, HealthReport, HealthThresholds, assess
from thorbis_cache.observability.http import HttpServer
from thorbis_cache.observability.operations import OperationObserver
from thorbis_cache.observability.probe import Probe, ProbeResult
from thorbis_cache.observability.tenants import OTHER, TopTenants
from thorbis_cache.observability.views import MeteredMvScheduler, MvRefreshMetrics
from thorbis_cache.observability.workers import (
    CountingInvalidator,
    InvalidationsCollector,
    QueueCollector,
    WorkerCollector,
)

__all__ = [
    "CONTENT_TYPE",
    "OTHER",
    "Check",
    "CountingInvalidator",
    "Exporter",
    "HealthReport",
    "HealthThresholds",
    "HttpServer",
    "InvalidationsCollector",
    "MeteredMvScheduler",
    "MetricsApp",
    "MvRefreshMetrics",
    "OperationObserver",
    "Probe",
    "ProbeResult",
    "QueueCollector",
    "TopTenants",
    "WorkerCollector",
    "assess",
]
