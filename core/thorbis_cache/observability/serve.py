"""The ``/metrics`` and ``/health`` endpoint inside the worker process
(``thorbis-cache worker --metrics-port N``): the worker's, queue consumer's and view
scheduler's figures beside the cache's and the servers' (``thorbis-cache serve``, in
:mod:`thorbis_cache.cli.serve`, serves the servers' alone)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thorbis_cache.cache.core import Cache
    from thorbis_cache.invalidation.queue import InvalidationQueue, Invalidator
    from thorbis_cache.invalidation.worker import OutboxWorker
    from thorbis_cache.mv.scheduler import ScheduledView
    from thorbis_cache.observability.http import HttpServer
    from thorbis_cache.observability.views import MvRefreshMetrics

__all__ = ["worker_endpoint"]

async def worker_endpoint(cache: Cache, dsn: str, worker: OutboxWorker,
                          queue: InvalidationQueue, handler: Invalidator,
                          views: MvRefreshMetrics, *, port: int, host: str = "127.0.0.1",
                          scheduled: Sequence[ScheduledView] = ()
                          ) -> tuple[HttpServer, Invalidator]:
    """Start the worker process's endpoint: the cache's counters, the worker's, the
    queue consumer's (its jobs counted through the returned handler) and the view
    scheduler's, the outbox and the queue's backlogs.

    :param scheduled: the views the scheduler refreshes, whose freshness ``/health``
        reports.
    :returns: the started server (close it with ``aclose``) and the handler the queue
        must consume with.
    :raises ConfigurationError: the port cannot be bound.
    """
    from thorbis_cache.observability.asgi import MetricsApp
    from thorbis_cache.observability.exporter import Exporter
    from thorbis_cache.observability.http import HttpServer

    exporter = Exporter(cache, dsn=dsn, operations=False)
    exporter.add_worker(worker)
    counting = exporter.add_queue(queue, handler)
    exporter.add_views(views)
    rules = [rule for rules in worker.rules.values() for rule in rules]
    server = await HttpServer(MetricsApp(exporter, views=scheduled, rules=rules), host,
                              port).start()
    return server, counting
