"""``/metrics`` and ``/health`` as a plain ASGI application a host mounts (no web
framework needed; FastAPI and Starlette mount it as it is, see ``docs/operations.md``).

* ``GET /metrics``: the Prometheus text format (the servers' figures read first).
* ``GET /health``: JSON, ``{"status": ..., "checks": {name: {"status", "reason",
  ...figures}}}``; HTTP 200, or 503 when unhealthy. The checks are
  :func:`thorbis_cache.observability.health.check`'s, as ``thorbis-cache health``
  reports them, with the hit ratio of this process's reads.

Mounted under a prefix, the paths are taken relative to the ASGI ``root_path``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from thorbis_cache.mv.scheduler import ScheduledView
from thorbis_cache.observability.exporter import CONTENT_TYPE, Exporter
from thorbis_cache.observability.health import HitCounts, check
from thorbis_cache.plugins.declarations import InvalidationRule

__all__ = ["MetricsApp"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class MetricsApp:
    """An ASGI 3 application serving an :class:`Exporter` (see the module docstring).

    :param exporter: the process's metrics and health.
    :param views: the materialized views whose freshness ``/health`` reports
        (``[ScheduledView(p.name, v) for p in app.plugins.plugins.values() for v in
        p.views]``); none leaves the check out.
    :param rules: the invalidation rules whose tables ``/health`` checks are captured
        (``app.plugins.all_rules()``); none leaves the check out.
    """

    def __init__(self, exporter: Exporter, *, views: Sequence[ScheduledView] = (),
                 rules: Sequence[InvalidationRule] = ()) -> None:
        self.exporter = exporter
        self.views = tuple(views)
        self.rules = tuple(rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI connection (``http``; ``lifespan`` is acknowledged)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        path = "/" + path.strip("/")
        if path not in ("/metrics", "/health"):
            await _respond(send, 404, b"not found: try /metrics or /health\n", "text/plain")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain",
                           [(b"allow", b"GET, HEAD")])
            return
        if path == "/metrics":
            body = await self.exporter.render()
            status, content_type = 200, CONTENT_TYPE
        else:
            exporter = self.exporter
            report = await check(exporter.probe, views=self.views, rules=self.rules,
                                 hits=HitCounts.from_families(exporter.cache.metrics.collect()),
                                 thresholds=exporter.thresholds)
            body = json.dumps(report.as_dict(), indent=1).encode() + b"\n"
            status, content_type = report.http_status, "application/json"
        await _respond(send, status, b"" if scope["method"] == "HEAD" else body, content_type,
                       length=len(body))


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   extra: list[tuple[bytes, bytes]] | None = None,
                   length: int | None = None) -> None:
    headers = [(b"content-type", content_type.encode()),
               (b"content-length", str(len(body) if length is None else length).encode()),
               (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
