"""A circuit breaker for the Redis store: when Redis is down, fail fast instead of making
every call wait for its deadline.

A dead or stuck server costs each call a refused connection or, worse, the whole call
deadline (a paused process, a partitioned network). Without a breaker every reader pays
that wait before ``get_or_load`` falls back to its loader, and the event loop fills with
calls waiting on a server that will not answer. The breaker counts consecutive
unavailability failures; at ``failure_threshold`` it **opens**: calls are refused at
once with :class:`~thorbis_cache.errors.RedisUnavailableError` (so reads degrade to
their loaders immediately). After ``cooldown`` seconds it is **half-open**: one call goes
through as a probe while the others are still refused; the probe's success closes it,
its failure opens it again for another cooldown.

The state is a few plain attributes checked with one comparison on the hot path; it is
local to one store (one process), like the connections it protects.
"""

from __future__ import annotations

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Closed, open or half-open (see the module docstring).

    :param failure_threshold: consecutive unavailability failures that open it.
    :param cooldown: seconds it stays open before a probe may go through.
    :ivar opens: how many times it opened.
    :ivar refused: calls refused while open or while a probe was in flight.
    """

    __slots__ = ("cooldown", "failure_threshold", "failures", "open_until", "opens",
                 "probing", "refused")

    def __init__(self, failure_threshold: int = 3, cooldown: float = 0.2) -> None:
        if failure_threshold < 1 or cooldown <= 0:
            raise ValueError(f"circuit breaker needs failure_threshold >= 1 and cooldown > 0, "
                             f"got {failure_threshold} and {cooldown}")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.failures = 0
        #: 0.0 while closed; else the monotonic time from which a probe may go through.
        self.open_until = 0.0
        self.probing = False
        self.opens = 0
        self.refused = 0

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (a probe is in flight)."""
        if not self.open_until:
            return "closed"
        return "half-open" if self.probing else "open"

    def allow(self, now: float) -> bool:
        """Whether a call may go out at ``now`` (monotonic seconds); a call allowed after
        the cooldown is the probe, and must report :meth:`success` or :meth:`failure`
        (or :meth:`abandoned`)."""
        if not self.open_until:
            return True
        if self.probing or now < self.open_until:
            self.refused += 1
            return False
        self.probing = True
        return True

    def success(self) -> None:
        """A call got its reply: close."""
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    def failure(self, now: float) -> None:
        """A call found Redis unavailable: count it; open (again) at the threshold, or
        when the probe failed."""
        self.failures += 1
        if self.probing or self.failures >= self.failure_threshold:
            if not self.open_until:
                self.opens += 1
            self.open_until = now + self.cooldown
        self.probing = False

    def abandoned(self) -> None:
        """A call was cancelled by its caller: if it was the probe, let another probe."""
        self.probing = False

    def describe(self, now: float) -> str:
        """Why a call was refused, for the error message."""
        wait = max(0.0, self.open_until - now)
        return (f"circuit open after {self.failures} consecutive failure(s); next probe in "
                f"{wait:.2f}s")
