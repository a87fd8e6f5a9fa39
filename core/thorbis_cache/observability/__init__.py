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

from typing import TYPE_CHECKING

from thorbis_cache._lazy import lazy_exports

if TYPE_CHECKING:
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

#: Imported on first access: a module of this package (``serve``'s constants, say)
#: loads without the exporter and the cache behind it.
_LAZY = {
    "CONTENT_TYPE": "thorbis_cache.observability.exporter",
    "Check": "thorbis_cache.observability.health",
    "CountingInvalidator": "thorbis_cache.observability.workers",
    "Exporter": "thorbis_cache.observability.exporter",
    "HealthReport": "thorbis_cache.observability.health",
    "HealthThresholds": "thorbis_cache.observability.health",
    "HttpServer": "thorbis_cache.observability.http",
    "InvalidationsCollector": "thorbis_cache.observability.workers",
    "MeteredMvScheduler": "thorbis_cache.observability.views",
    "MetricsApp": "thorbis_cache.observability.asgi",
    "MvRefreshMetrics": "thorbis_cache.observability.views",
    "OTHER": "thorbis_cache.observability.tenants",
    "OperationObserver": "thorbis_cache.observability.operations",
    "Probe": "thorbis_cache.observability.probe",
    "ProbeResult": "thorbis_cache.observability.probe",
    "QueueCollector": "thorbis_cache.observability.workers",
    "TopTenants": "thorbis_cache.observability.tenants",
    "WorkerCollector": "thorbis_cache.observability.workers",
    "assess": "thorbis_cache.observability.health",
}


__getattr__ = lazy_exports(globals(), _LAZY)


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
