"""One ``redis-server <conf> --sentinel`` process, for :class:`RedisSentinelGroup`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from thorbis_cache.testing.binaries import RedisBinaries
from thorbis_cache.testing.servers._ports import HOST
from thorbis_cache.testing.servers.redis_server import RedisServer

# Sentinel's internal periods, shortened with SENTINEL DEBUG (a runtime setting that
# sentinel does not persist, so it is applied after every start). Only the timeline is
# compressed; what sentinel decides is unchanged.
_SENTINEL_TIMINGS: Mapping[str, int] = {
    # PINGs and reconnection attempts (default 1 s). Sentinel kills the other
    # sentinels' connections to a replica it promotes; with a PING only every second, a
    # 1 s down-after saw the new master "down" and failed it over again. Not lower: a
    # replica's INFO (sent every second while the master is down) must be younger
    # than 5 periods to be eligible for promotion.
    "ping-period": 300,
    # Asking the other sentinels whether they see the master down (default 1 s).
    "ask-period": 250,
    # INFO to masters and replicas (default 10 s): how soon a role change is noticed.
    "info-period": 1000,
    # Hello messages (default 2 s): discovery of the other sentinels at start-up; a
    # returning old master is converted to a replica after 4 periods.
    "publish-period": 500,
    # A stall over 2 s (a loaded CI box) puts sentinel in TILT, deciding nothing for
    # this long (default 30 s).
    "tilt-period": 5000,
}


class _Sentinel(RedisServer):
    """A ``redis-server <conf> --sentinel`` process with its own writable config file.

    Sentinel rewrites that file with what it learns (epochs, replicas, other sentinels),
    so a restarted sentinel comes back knowing the group.
    """

    _kind = "redis-sentinel"
    _example = None  # its config file includes deploy/redis/sentinel.conf

    def __init__(
        self,
        *,
        config: str,
        dir: Path,
        binaries: RedisBinaries,
        startup_timeout: float,
        port: int | None = None,
    ) -> None:
        super().__init__(port=port, dir=dir, binaries=binaries, startup_timeout=startup_timeout)
        self._config = config

    @property
    def config_path(self) -> Path:
        """The sentinel's config file (rewritten by sentinel itself)."""
        return self.dir / "sentinel.conf"

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<redis-sentinel {HOST}:{self._port} {state} dir={self._dir}>"

    def start(self) -> Self:
        """Write the config file on first start, start sentinel, shorten its periods.

        :returns: the sentinel itself.
        :raises ServerStartError: it did not start.
        """
        if self.is_running:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.config_path.write_text(self._config)
        super().start()
        timings = [str(item) for pair in _SENTINEL_TIMINGS.items() for item in pair]
        self.command("SENTINEL", "DEBUG", *timings)
        return self

    def _argv(self, binaries: RedisBinaries, port: int) -> list[str]:
        # The config file must be the first argument; the usual options follow.
        server, *options = super()._argv(binaries, port)
        return [server, str(self.config_path), "--sentinel", *options]


def _pairs(reply: Any) -> dict[str, str]:
    """A flat ``[key, value, ...]`` reply (SENTINEL MASTER/REPLICAS) as a dict."""
    items = [item.decode() if isinstance(item, bytes) else str(item) for item in reply or []]
    return dict(zip(items[::2], items[1::2], strict=False))
