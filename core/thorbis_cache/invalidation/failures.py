"""The worker's run loop after a failure other than Redis being away: how long it
pauses, and what it says.

A failure that lasts (PostgreSQL refusing connections while it shuts down, a
replication error the server repeats at every stream, a tag invalidator that keeps
raising) must neither be retried in a tight loop nor fill the log. Found as an operator
would: a stream that opened, returned an empty batch, then failed again counted as a
success in between, so the pause started again at 0.1 s every time, and each failure
logged its whole traceback (354 of them in 41 s, about 10,000 lines).
"""

from __future__ import annotations

import logging

__all__ = ["FIRST_PAUSE", "REPEAT_LOG_INTERVAL", "FailureBackoff"]

#: Seconds of the first pause after a failure.
FIRST_PAUSE = 0.1
#: Seconds between the lines that say a failure is still the same.
REPEAT_LOG_INTERVAL = 30.0


class FailureBackoff:
    """Pauses and log lines of one run loop.

    The pause doubles from :data:`FIRST_PAUSE` to ``max_pause`` at each failure, and
    starts again from :data:`FIRST_PAUSE` only once a batch applied changes, or once no
    failure came for twice ``max_pause``: a batch that read nothing between two
    failures does not end the failure.

    The first failure of a kind (its type and message) is logged as an error with its
    traceback; the same failure again as one warning line at most every
    :data:`REPEAT_LOG_INTERVAL` seconds, with how often it came meanwhile (each one
    at debug level); the end of a failure as one line saying how long it lasted.

    :param log: where to say it.
    :param max_pause: the longest pause (the worker's ``max_backoff``).
    """

    __slots__ = ("_count", "_held", "_kind", "_last_failure", "_log", "_said_at", "_since",
                 "max_pause", "pause")

    def __init__(self, log: logging.Logger, max_pause: float) -> None:
        self._log = log
        self.max_pause = max_pause
        #: the pause after the last failure (0.0: none is going on)
        self.pause = 0.0
        self._kind: tuple[str, str] | None = None
        self._count = 0  # failures since the failure began
        self._held = 0  # failures not said since the last line
        self._since = 0.0  # when the failure began
        self._said_at = 0.0
        self._last_failure = float("-inf")

    def failed(self, exc: BaseException, now: float) -> float:
        """Count a failure at ``now`` (monotonic seconds), say it as above; returns the
        pause before the next try."""
        self.pause = min(max(self.pause * 2, FIRST_PAUSE), self.max_pause)
        self._last_failure = now
        kind = (type(exc).__name__, str(exc))
        if self._count == 0:
            self._since = now
        self._count += 1
        if kind != self._kind:
            self._kind, self._held, self._said_at = kind, 0, now
            self._log.error("outbox worker: batch failed; retrying in %.1fs", self.pause,
                            exc_info=exc)
        elif now - self._said_at >= REPEAT_LOG_INTERVAL:
            self._log.warning(
                "outbox worker: batch failed %d more time(s) in %.0f s with the same "
                "error, %d in all since %.0f s ago: %s: %s; retrying in %.1fs",
                self._held + 1, now - self._said_at, self._count, now - self._since,
                kind[0], kind[1][:500], self.pause)
            self._held, self._said_at = 0, now
        else:
            self._held += 1
            self._log.debug("outbox worker: batch failed again (%s); retrying in %.1fs",
                            kind[0], self.pause)
        return self.pause

    def succeeded(self, applied: bool, now: float) -> None:
        """A batch went through at ``now``; ``applied``: it applied changes."""
        if self._count == 0 or not (applied or now - self._last_failure > 2 * self.max_pause):
            return
        self._log.info("outbox worker: batches go through again after %d failure(s) over "
                       "%.1f s", self._count, now - self._since)
        self.pause, self._count, self._held, self._kind = 0.0, 0, 0, None
