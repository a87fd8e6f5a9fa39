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

On a Cluster, one master out of reach is one shard out of reach: Redis keeps serving the
others, and so must the store. :class:`Breakers` gives each master its own breaker for
the calls of one hash slot (every call of one tenant), so that a shard's failures refuse
only that shard's calls; the store's own breaker is for the calls that span several
slots or name no key.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Breakers", "CircuitBreaker"]


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

    def trip(self, now: float) -> None:
        """Open now, whatever the count: the server was found silent for longer than a
        call's timeout (its connections closed), so the next calls would only wait out
        their deadlines too."""
        self.failures = max(self.failures + 1, self.failure_threshold)
        if not self.open_until:
            self.opens += 1
        self.open_until = now + self.cooldown
        self.probing = False

    def describe(self, now: float) -> str:
        """Why a call was refused, for the error message."""
        wait = max(0.0, self.open_until - now)
        return (f"circuit open after {self.failures} consecutive failure(s); next probe in "
                f"{wait:.2f}s")


class Breakers:
    """The breakers a store's calls answer to (see the module docstring).

    :param main: the store's breaker: every call's on a single server or a Sentinel
        group; on a Cluster, the calls that span several slots or name no key.
    :param node_of: on a Cluster, the name of the master serving a key (None while no
        master serves the key's slot: the call then answers to ``main``).
    """

    __slots__ = ("_by_node", "_node_of", "alarmed", "main")

    def __init__(self, main: CircuitBreaker,
                 node_of: Callable[[str], str | None] | None = None) -> None:
        self.main = main
        self._node_of = node_of
        self._by_node: dict[str, CircuitBreaker] = {}
        #: the breakers that are not closed (failures counted, open, or probing), by
        #: name ("" for ``main``): empty in the steady state, which is all the hot path
        #: looks at
        self.alarmed: dict[str, CircuitBreaker] = {}

    def _of(self, route: str | None) -> tuple[str, CircuitBreaker]:
        name = self._name_of(route)
        return ("", self.main) if name is None else (name, self._master(name))

    def _name_of(self, route: str | None) -> str | None:
        """The master whose breaker a call routed by ``route`` answers to (None: the
        store's)."""
        return None if route is None or self._node_of is None else self._node_of(route)

    def _master(self, name: str) -> CircuitBreaker:
        """The breaker of master ``name``, made with ``main``'s settings on first use."""
        breaker = self._by_node.get(name)
        if breaker is None:
            main = self.main
            breaker = self._by_node[name] = CircuitBreaker(main.failure_threshold,
                                                           main.cooldown)
        return breaker

    def refusal(self, route: str | None, now: float) -> str | None:
        """Why a call routed by ``route`` (None: several slots, or no key) is refused at
        ``now``, or None when it may go (perhaps as its breaker's probe)."""
        name, breaker = self._of(route)
        if breaker.allow(now):
            return None
        return breaker.describe(now) + (f" on master {name}" if name else "")

    def success(self, route: str | None) -> None:
        """A call routed by ``route`` got its reply."""
        name, breaker = self._of(route)
        breaker.success()
        self.alarmed.pop(name, None)

    def failure(self, route: str | None, now: float) -> None:
        """A call routed by ``route`` found its server unavailable."""
        name, breaker = self._of(route)
        breaker.failure(now)
        self.alarmed[name] = breaker

    def abandoned(self, route: str | None) -> None:
        """A call routed by ``route`` was cancelled by its caller."""
        self._of(route)[1].abandoned()

    def trip(self, master: str | None, now: float) -> None:
        """Open the breaker of ``master`` (a Cluster node's name, ``host:port``), or
        the store's (None): that server was found silent."""
        if master is None or self._node_of is None:
            name, breaker = "", self.main
        else:
            name, breaker = master, self._master(master)
        breaker.trip(now)
        self.alarmed[name] = breaker

    def suspect(self, master: str) -> bool:
        """Whether the breaker of ``master`` (a Cluster node's name) opened and has not
        closed since (open, cooling down, or waiting for its probe): calls that may go
        to any master, or must ask every one, keep away from it until one of its own
        calls finds it answering. Asks nothing of it, unlike a call."""
        breaker = self._by_node.get(master)
        return breaker is not None and bool(breaker.open_until)

    def route_suspect(self, route: str) -> bool:
        """:meth:`suspect` of the master serving ``route`` (a key), asking nothing of it:
        False off a Cluster, or while no master serves the key's slot."""
        name = self._name_of(route)
        return name is not None and self.suspect(name)

    def every(self) -> dict[str, CircuitBreaker]:
        """Every breaker by name: ``""`` for ``main``, then the masters' by node name."""
        return {"": self.main, **self._by_node}
