"""One ephemeral ``prometheus`` on 127.0.0.1, scraping the targets a test names.

The configuration (``prometheus.yml``) and the TSDB live in a fresh temp directory,
removed on ``stop()``; the process is a child of this one, like the Redis and
PostgreSQL launchers' (never a system service). Queries go to its HTTP API.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from thorbis_cache.errors import ServerStartError
from thorbis_cache.testing.binaries import PrometheusBinaries, find_prometheus
from thorbis_cache.testing.servers._base import _LIVE, _POLL_INTERVAL, _PortInUse, _ServerBase
from thorbis_cache.testing.servers._ports import HOST, free_port
from thorbis_cache.testing.servers._process import (
    _STOP_TIMEOUT,
    _read_from,
    _size,
    _spawn,
    _tail,
    _terminate,
)

__all__ = ["PrometheusServer"]


class PrometheusServer(_ServerBase):
    """A ``prometheus`` scraping ``targets`` every ``scrape_interval``.

    ``dir`` holds ``prometheus.yml``, ``data/`` and ``prometheus.log``.

    :param targets: job name -> ``host:port`` addresses serving ``/metrics``.
    :param rule_files: alerting/recording rule files to load (copied into the config
        by absolute path).
    :param scrape_interval: Prometheus duration between scrapes (and rule evaluations).
    :param port: listen on this port; a free one by default.
    :param binaries: the prometheus to run; located with :func:`find_prometheus` by
        default.
    :param startup_timeout: seconds to wait for ``/-/ready``.
    """

    _kind = "prometheus"

    def __init__(self, targets: Mapping[str, Sequence[str]], *,
                 rule_files: Sequence[Path] = (), scrape_interval: str = "1s",
                 port: int | None = None, binaries: PrometheusBinaries | None = None,
                 startup_timeout: float = 30.0) -> None:
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.targets = {job: list(addresses) for job, addresses in targets.items()}
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval = scrape_interval
        self._binaries = binaries

    @property
    def binaries(self) -> PrometheusBinaries:
        """The prometheus in use (located on first use)."""
        if self._binaries is None:
            self._binaries = find_prometheus()
        return self._binaries

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def config(self) -> dict[str, Any]:
        """The configuration written to ``prometheus.yml`` (JSON is valid YAML)."""
        return {
            "global": {"scrape_interval": self.scrape_interval,
                       "evaluation_interval": self.scrape_interval,
                       "scrape_timeout": self.scrape_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": addresses}]}
                               for job, addresses in self.targets.items()],
        }

    def start(self) -> Self:
        """Start it (no-op when running) and wait until ``/-/ready`` answers 200.

        :raises ServerBinaryNotFound: no usable prometheus.
        :raises ServerStartError: it exited or was not ready in time; the message names
            the binary, port and directory and carries the log tail.
        """
        if self.is_running:
            return self
        binaries = self.binaries
        if self._dir is None:
            self._dir = self._new_dir("thorbis-prometheus-")
        (self._dir / "prometheus.yml").write_text(json.dumps(self.config(), indent=1))
        _LIVE.add(self)
        self._start_with_port_retry(lambda port: self._launch(binaries, port), free_port)
        return self

    def _launch(self, binaries: PrometheusBinaries, port: int) -> None:
        directory = self.dir
        log = directory / "prometheus.log"
        offset = _size(log)
        argv = [
            str(binaries.prometheus),
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self._child.proc = proc = _spawn(argv, log=log, cwd=directory)
        deadline = time.monotonic() + self._startup_timeout

        def failure(what: str) -> str:
            return (f"prometheus {binaries.prometheus} on {HOST}:{port} (dir {directory}) "
                    f"{what}; log tail:\n{_tail(log)}")

        while True:
            code = proc.poll()
            if code is not None:
                if "address already in use" in _read_from(log, offset):
                    raise _PortInUse(failure("could not bind its port"))
                raise ServerStartError(failure(f"exited with status {code} during start-up"))
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/-/ready", timeout=1.0) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(failure(f"was not ready within {self._startup_timeout:g}s"))
            time.sleep(_POLL_INTERVAL)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and remove its directory. Idempotent."""
        proc = self._child.proc
        if proc is not None:
            _terminate(proc, signal.SIGTERM, _STOP_TIMEOUT)
            self._child.proc = None
        self._remove_owned_dir()
        self._dir = None
        _LIVE.discard(self)

    # ---- the HTTP API

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>`` and return its ``data``.

        :raises RuntimeError: the API answered an error (its message named).
        :raises OSError: prometheus could not be reached.
        """
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            # http://127.0.0.1:PORT, built above: never a file: or custom scheme.
            with urllib.request.urlopen(url, timeout=10.0) as response:  # noqa: S310
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body.get('error')!r}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": labels, "value": [t, "v"]}, ...]``."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise RuntimeError(f"prometheus query {expr!r} gave a {data['resultType']}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it is empty.

        :raises RuntimeError: the query returned several series.
        """
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"prometheus query {expr!r} returned {len(result)} series")
        return float(result[0]["value"][1])
