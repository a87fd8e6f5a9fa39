"""``/health``: each check healthy, warning or unhealthy with its reason, from one
:class:`~thorbis_cache.observability.probe.ProbeResult`.

* ``redis``: unhealthy when PING fails; warning when it takes over ``redis_slow``.
* ``postgres`` (with a DSN): unhealthy when it does not answer.
* ``outbox``: warning past ``backlog_warning`` rows or ``lag_warning`` seconds of age,
  unhealthy past ``lag_unhealthy`` seconds (the cache serves stale entries that long).
* ``dead_letters``: warning when the outbox or the queue holds any (changes that were
  never applied: ``thorbis-cache deadletters``).

The overall status is the worst check's; HTTP 200 unless unhealthy (503).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from thorbis_cache.observability.probe import ProbeResult

__all__ = ["Check", "HealthReport", "HealthThresholds", "assess"]

Status = Literal["healthy", "warning", "unhealthy"]
_RANK: dict[Status, int] = {"healthy": 0, "warning": 1, "unhealthy": 2}


@attrs.frozen(slots=True)
class HealthThresholds:
    """Where checks turn warning or unhealthy.

    :ivar redis_slow: seconds of PING round trip that make Redis a warning.
    :ivar backlog_warning: outbox rows waiting that make a warning.
    :ivar lag_warning: seconds of age of the oldest outbox row that make a warning.
    :ivar lag_unhealthy: ... that make it unhealthy.
    """

    redis_slow: float = 0.1
    backlog_warning: int = 10_000
    lag_warning: float = 30.0
    lag_unhealthy: float = 300.0


@attrs.frozen(slots=True)
class Check:
    """One check: its status, why, and the figures behind it."""

    status: Status
    reason: str
    figures: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(slots=True)
class HealthReport:
    """Every check and the overall status (the worst)."""

    checks: dict[str, Check]

    @property
    def status(self) -> Status:
        """The worst status of the checks."""
        return max((c.status for c in self.checks.values()), key=_RANK.__getitem__,
                   default="healthy")

    @property
    def http_status(self) -> int:
        """200, or 503 when unhealthy."""
        return 503 if self.status == "unhealthy" else 200

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of ``/health``."""
        return {"status": self.status, "checks": {
            name: {"status": c.status, "reason": c.reason, **c.figures}
            for name, c in self.checks.items()}}


def assess(r: ProbeResult, thresholds: HealthThresholds | None = None) -> HealthReport:
    """The health checks of one reading of the servers."""
    t = thresholds or HealthThresholds()
    checks = {"redis": _redis(r, t)}
    if r.postgres_up is not None:
        checks["postgres"] = (
            Check("healthy", "answered") if r.postgres_up
            else Check("unhealthy", f"not answering: {r.postgres_error}"))
    if r.outbox_backlog is not None:
        checks["outbox"] = _outbox(r, t)
    dead = {"outbox": r.outbox_dead_letters, "queue": r.queue_dead_letters}
    known = {k: v for k, v in dead.items() if v is not None}
    if known:
        held = {k: v for k, v in known.items() if v}
        checks["dead_letters"] = Check(
            "warning" if held else "healthy",
            "; ".join(f"{n} dead letter(s) in the {k}" for k, n in held.items())
            + " (thorbis-cache deadletters)" if held else "none",
            {f"{k}_dead_letters": v for k, v in known.items()})
    return HealthReport(checks)


def _redis(r: ProbeResult, t: HealthThresholds) -> Check:
    if not r.redis_up:
        return Check("unhealthy", f"not answering PING: {r.redis_error}")
    ping = r.redis_ping_seconds or 0.0
    figures = {"latency_ms": round(ping * 1000, 3)}
    if ping > t.redis_slow:
        return Check("warning", f"PING took {ping * 1000:.0f} ms "
                     f"(over {t.redis_slow * 1000:.0f} ms)", figures)
    return Check("healthy", f"PING in {ping * 1000:.1f} ms", figures)


def _outbox(r: ProbeResult, t: HealthThresholds) -> Check:
    backlog, oldest = r.outbox_backlog or 0, r.outbox_oldest_seconds or 0.0
    figures = {"backlog": backlog, "oldest_seconds": round(oldest, 3)}
    if oldest > t.lag_unhealthy:
        return Check("unhealthy", f"oldest change waiting {oldest:.0f} s (over "
                     f"{t.lag_unhealthy:.0f} s): is a worker running?", figures)
    if oldest > t.lag_warning or backlog > t.backlog_warning:
        return Check("warning", f"{backlog} change(s) waiting, oldest {oldest:.0f} s",
                     figures)
    return Check("healthy", f"{backlog} change(s) waiting", figures)
