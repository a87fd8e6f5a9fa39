"""Health: each check healthy, warning or unhealthy with its reason and figures, from
one reading of the servers (:meth:`~thorbis_cache.observability.probe.Probe.examine`).
``/health`` and ``thorbis-cache health`` both call :func:`check`.

* ``redis``: unhealthy when PING fails; warning when it takes over ``redis_slow``.
* ``topology``: a Cluster whose state is not ``ok`` or with slots unassigned or failed
  is unhealthy, slots in ``pfail`` a warning; a Sentinel group whose master the
  sentinels flag down is unhealthy, no sentinel answering a warning; any replica not
  ``online`` or whose last acknowledgement is older than ``replica_lag`` a warning.
* ``eviction``: a ``maxmemory-policy`` the invalidation engine refuses (``allkeys-*``,
  see :mod:`thorbis_cache.cache.eviction`) is unhealthy, naming the policy and the master.
* ``memory``: ``used_memory`` over ``memory_warning`` / ``memory_unhealthy`` of
  ``maxmemory`` on any master (evicted keys are a figure).
* ``hit_ratio``: hits / (hits + misses) of the reads counted (the process's own, or a
  running process's ``/metrics``) under ``hit_ratio_warning``; ``unknown`` when no
  figures exist (a CLI process serves no reads).
* ``queue``: the invalidation queue's oldest job over ``queue_lag_warning`` /
  ``queue_lag_unhealthy`` seconds, or more than ``backlog_warning`` jobs.
* ``postgres`` (with a DSN): unhealthy when it does not answer.
* ``outbox``: warning past ``backlog_warning`` rows or ``lag_warning`` seconds of age,
  unhealthy past ``lag_unhealthy`` seconds (the cache serves stale entries that long);
  parked changes (their Cluster shard out of reach) count, and any is a warning that
  says so.
* ``dead_letters``: warning when the outbox or the queue holds any (changes that were
  never applied: ``thorbis-cache outbox-deadletters list`` for the outbox's,
  ``thorbis-cache deadletters list`` for the queue's); ``unknown`` when one of them
  could not be read (its server did not answer), never "none".
* ``views`` (with views to watch): a view ``stale``, ``failing`` or never refreshed is
  a warning (``thorbis-cache mv status`` has the details).
* ``capture_slot`` (when a logical capture slot, or its publication, exists):
  ``wal_status`` ``lost``, or a publication without its slot, is unhealthy (changes
  were lost; a worker flushes for them and makes the slot again); ``unreserved``, a
  backlog over ``slot_backlog``, no session reading it (no worker runs: nothing is
  invalidated), or a reader that
  ``synchronous_standby_names`` makes a synchronous standby a warning.
* ``capture_columns`` (when a migration took a column a rule reads from a captured
  table, or changed its type under capture triggers): a warning naming the table and
  the columns; its changes are captured by a stand-in (triggers) and, for a missing
  column, invalidated conservatively until ``thorbis-cache db init`` runs with rules
  that match
  (:mod:`thorbis_cache.postgres.capture_ddl`).

The overall status is the worst check's (``unknown`` counts as healthy); HTTP 200
unless unhealthy (503).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs
from prometheus_client.core import Metric

from thorbis_cache.cache.eviction import refusal
from thorbis_cache.mv.scheduler import ScheduledView
from thorbis_cache.observability.probe import (
    HealthReading,
    MasterState,
    Probe,
    ProbeResult,
    TopologyReading,
)
from thorbis_cache.plugins.declarations import InvalidationRule
from thorbis_cache.postgres.logical import SYNC_CANDIDATE

__all__ = ["Check", "HealthReport", "HealthThresholds", "HitCounts", "assess", "check"]

Status = Literal["healthy", "warning", "unhealthy", "unknown"]
_RANK: dict[Status, int] = {"unknown": -1, "healthy": 0, "warning": 1, "unhealthy": 2}


@attrs.frozen(slots=True)
class HealthThresholds:
    """Where checks turn warning or unhealthy.

    :ivar redis_slow: seconds of PING round trip that make Redis a warning.
    :ivar backlog_warning: outbox rows (or queue jobs) waiting that make a warning.
    :ivar lag_warning: seconds of age of the oldest outbox row that make a warning.
    :ivar lag_unhealthy: ... that make it unhealthy.
    :ivar queue_lag_warning: seconds of age of the queue's oldest job: a warning.
    :ivar queue_lag_unhealthy: ... unhealthy.
    :ivar memory_warning: ``used_memory / maxmemory`` of a master that makes a warning.
    :ivar memory_unhealthy: ... unhealthy (under ``noeviction`` writes fail at 1.0).
    :ivar replica_lag: seconds since a replica's last acknowledgement: a warning.
    :ivar hit_ratio_warning: a hit ratio under this is a warning ...
    :ivar hit_ratio_min_reads: ... once at least this many reads were counted.
    :ivar slot_backlog: WAL bytes a logical capture slot holds that make a warning.
    """

    redis_slow: float = 0.1
    backlog_warning: int = 10_000
    lag_warning: float = 30.0
    lag_unhealthy: float = 300.0
    queue_lag_warning: float = 30.0
    queue_lag_unhealthy: float = 300.0
    memory_warning: float = 0.85
    memory_unhealthy: float = 0.95
    replica_lag: float = 10.0
    hit_ratio_warning: float = 0.5
    hit_ratio_min_reads: int = 100
    slot_backlog: int = 1 << 30


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
        """The worst status of the checks (``unknown`` ones count as healthy)."""
        worst: Status = max((c.status for c in self.checks.values()),
                            key=_RANK.__getitem__, default="healthy")
        return "healthy" if worst == "unknown" else worst

    @property
    def http_status(self) -> int:
        """200, or 503 when unhealthy."""
        return 503 if self.status == "unhealthy" else 200

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of ``/health``."""
        return {"status": self.status, "checks": {
            name: {"status": c.status, "reason": c.reason, **c.figures}
            for name, c in self.checks.items()}}


@attrs.frozen(slots=True)
class HitCounts:
    """Reads counted by schema: hits (``thorbis_cache_hits`` and ``thorbis_cache_near_hits``:
    a read the near cache answered is a hit, without a Redis call) and misses
    (``thorbis_cache_misses``). A read L1 could not answer is counted again by Redis's
    answer, so ``near_misses`` are not added."""

    hits: dict[str, float]
    misses: dict[str, float]

    @classmethod
    def from_families(cls, families: Iterable[Metric],
                      namespace: str = "thorbis_cache") -> HitCounts:
        """From Prometheus metric families: a collector's (``cache.metrics.collect()``)
        or a parsed ``/metrics`` text (``text_string_to_metric_families``)."""
        found: dict[str, dict[str, float]] = {"hits": {}, "misses": {}}
        for family in families:
            kind = family.name.removeprefix(f"{namespace}_")
            if not family.name.startswith(namespace):
                continue
            # Found as an operator would: a schema answered by L1 98% of the time read
            # as a hit ratio of 0 in health, stats and the alert.
            into = found.get("hits" if kind == "near_hits" else kind)
            if into is None:
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    schema = sample.labels.get("schema", "")
                    into[schema] = into.get(schema, 0.0) + sample.value
        return cls(found["hits"], found["misses"])

    @property
    def total_hits(self) -> float:
        """Hits of every schema."""
        return sum(self.hits.values())

    @property
    def total_misses(self) -> float:
        """Misses of every schema."""
        return sum(self.misses.values())


async def check(probe: Probe, *, views: Sequence[ScheduledView] = (),
                rules: Sequence[InvalidationRule] = (),
                hits: HitCounts | None = None, hits_unknown: str | None = None,
                thresholds: HealthThresholds | None = None) -> HealthReport:
    """Read the servers now and assess every check (the one implementation behind
    ``/health`` and ``thorbis-cache health``).

    :param probe: reads the servers (the store, prefix and DSN).
    :param views: the materialized views whose freshness is checked.
    :param rules: the invalidation rules whose tables must be captured (``capture``).
    :param hits: the reads counted, for ``hit_ratio``.
    :param hits_unknown: why they are not known (``hit_ratio`` is then ``unknown``).
    :param thresholds: where checks turn warning or unhealthy.
    """
    reading = await probe.examine(views, rules)
    return assess(reading, thresholds, hits=hits, hits_unknown=hits_unknown)


def assess(reading: ProbeResult | HealthReading, thresholds: HealthThresholds | None = None,
           *, hits: HitCounts | None = None, hits_unknown: str | None = None) -> HealthReport:
    """The health checks of one reading of the servers (a scrape's
    :class:`ProbeResult` gives the Redis, queue, PostgreSQL, outbox and dead-letter
    checks; a :class:`HealthReading` every check)."""
    t = thresholds or HealthThresholds()
    h = reading if isinstance(reading, HealthReading) else HealthReading(reading)
    r = h.probe
    checks = {"redis": _redis(r, t)}
    if h.topology is not None:
        checks["topology"] = _topology(h.topology, t)
        known = [m for m in h.topology.masters if m.info]
        if known:
            checks["eviction"] = _eviction(known)
            checks["memory"] = _memory(known, t)
    if hits is not None:
        checks["hit_ratio"] = _hit_ratio(hits, t)
    elif hits_unknown is not None:
        checks["hit_ratio"] = Check("unknown", hits_unknown)
    if r.queue_depth is not None:
        checks["queue"] = _queue(r, t)
    if r.postgres_up is not None:
        checks["postgres"] = (
            Check("unhealthy", f"not answering: {r.postgres_error}") if not r.postgres_up
            else Check("unhealthy", "a standby (in recovery, read-only): the worker, db init "
                       "and the refreshes need the primary (give its address, or several "
                       "with target_session_attrs=read-write)") if r.postgres_standby
            else Check("healthy", "answered"))
    if r.outbox_backlog is not None:
        checks["outbox"] = _outbox(r, t)
    dead = {"outbox": r.outbox_dead_letters, "queue": r.queue_dead_letters}
    known_dead = {k: v for k, v in dead.items() if v is not None}
    # The outbox's are read from PostgreSQL (when given), the queue's from Redis: one
    # that could not be read is said, never taken for none.
    unread = [k for k, v in dead.items() if v is None
              and (k == "queue" or r.postgres_up is not None)]
    if known_dead or unread:
        held = {k: v for k, v in known_dead.items() if v}
        said = [f"{n} dead letter(s) in the {k} ({_DEAD_LETTER_COMMANDS[k]})"
                for k, n in held.items()]
        said += [f"the {k}'s could not be read ({_DEAD_LETTER_SOURCES[k]} did not answer)"
                 for k in unread]
        checks["dead_letters"] = Check(
            "warning" if held else "unknown" if unread else "healthy",
            "; ".join(said) or "none",
            {f"{k}_dead_letters": v for k, v in known_dead.items()})
    if h.views is not None or h.views_error is not None:
        checks["views"] = _views(h)
    if h.slots:
        checks["capture_slot"] = _slots(h, t)
    if h.uncaptured is not None:
        checks["capture"] = Check(
            "unhealthy", "; ".join(h.uncaptured) + " (entries of these tables stay stale "
            "until their TTL)", {"uncaptured": len(h.uncaptured)}
        ) if h.uncaptured else Check("healthy", "every rule's table is captured")
    if h.incomplete:
        checks["capture_columns"] = _capture_columns(h)
    return HealthReport(checks)


#: Where each kind of dead letter is looked at, and read from.
_DEAD_LETTER_COMMANDS = {"outbox": "thorbis-cache outbox-deadletters list",
                         "queue": "thorbis-cache deadletters list"}
_DEAD_LETTER_SOURCES = {"outbox": "PostgreSQL", "queue": "Redis"}


def _capture_columns(h: HealthReading) -> Check:
    reasons = []
    for s in h.incomplete or ():
        if s.gone:
            reasons.append(f"{s.table} no longer has column(s) {', '.join(s.gone)} that its "
                           "rules read: its changes are invalidated "
                           "conservatively; update the rules, then run `thorbis-cache db "
                           "init`")
        if s.retyped:
            reasons.append(f"column(s) {', '.join(s.retyped)} of {s.table} changed type: "
                           "captured by a stand-in (slower); run `thorbis-cache db init`")
        if s.recreated:
            reasons.append(f"{s.table} was dropped and created again: its capture was put "
                           "back until `thorbis-cache db init`")
    return Check("warning", "; ".join(reasons), {
        "incomplete": {s.table: list(s.gone) for s in h.incomplete or () if s.gone},
        "retyped": {s.table: list(s.retyped) for s in h.incomplete or () if s.retyped},
        "recreated": [s.table for s in h.incomplete or () if s.recreated]})


def _redis(r: ProbeResult, t: HealthThresholds) -> Check:
    if not r.redis_up:
        return Check("unhealthy", f"not answering PING: {r.redis_error}")
    ping = r.redis_ping_seconds or 0.0
    figures = {"latency_ms": round(ping * 1000, 3)}
    if ping > t.redis_slow:
        return Check("warning", f"PING took {ping * 1000:.0f} ms "
                     f"(over {t.redis_slow * 1000:.0f} ms)", figures)
    return Check("healthy", f"PING in {ping * 1000:.1f} ms", figures)


def _worst(problems: list[tuple[Status, str]], fine: str, figures: dict[str, Any]) -> Check:
    """One check from its problems (the worst status, every reason), or ``fine``."""
    if not problems:
        return Check("healthy", fine, figures)
    status = max((s for s, _ in problems), key=_RANK.__getitem__)
    ordered = sorted(problems, key=lambda p: -_RANK[p[0]])
    return Check(status, "; ".join(reason for _, reason in ordered), figures)


def _topology(topo: TopologyReading, t: HealthThresholds) -> Check:
    if topo.error is not None:
        return Check("unhealthy", f"{topo.kind}: could not be read: {topo.error}",
                     {"kind": topo.kind})
    problems: list[tuple[Status, str]] = []
    replicas = []
    for m in topo.masters:
        if m.error is not None:
            problems.append(("unhealthy", f"master {m.address} not answering INFO: "
                                          f"{m.error}"))
        for rep in m.replicas:
            replicas.append({"master": m.address, "address": rep.address,
                             "state": rep.state, "lag_s": rep.lag_s,
                             "behind_bytes": rep.behind_bytes})
            if rep.state != "online":
                problems.append(("warning", f"replica {rep.address} of {m.address} is "
                                            f"{rep.state}"))
            elif rep.lag_s is not None and rep.lag_s > t.replica_lag:
                problems.append(("warning", f"replica {rep.address} of {m.address} last "
                                 f"acknowledged {rep.lag_s:.0f} s ago (over "
                                 f"{t.replica_lag:.0f} s), {rep.behind_bytes} bytes behind"))
    figures: dict[str, Any] = {"kind": topo.kind, "masters": [m.address for m in topo.masters],
                               "replicas": replicas}
    fine = f"{topo.kind}: {len(topo.masters)} master(s), {len(replicas)} replica(s) online"
    if topo.cluster is not None:
        c = topo.cluster
        state = c.get("cluster_state", "?")
        slots = {k: int(c.get(f"cluster_slots_{k}", 0)) for k in ("assigned", "ok", "pfail",
                                                                  "fail")}
        figures.update(cluster_state=state, slots=slots,
                       known_nodes=int(c.get("cluster_known_nodes", 0)))
        if state != "ok":
            problems.append(("unhealthy", f"cluster_state is {state}"))
        if slots["assigned"] < 16384:
            problems.append(("unhealthy", f"{16384 - slots['assigned']} slot(s) unassigned"))
        if slots["fail"]:
            problems.append(("unhealthy", f"{slots['fail']} slot(s) failed"))
        if slots["pfail"]:
            problems.append(("warning", f"{slots['pfail']} slot(s) possibly failing (pfail)"))
        fine = (f"cluster ok: {slots['ok']}/16384 slots ok, {len(topo.masters)} masters, "
                f"{len(replicas)} replica(s) online")
    s = topo.sentinel
    if s is not None:
        figures["sentinel"] = {
            "answered": s.answered, "master": s.master, "flags": s.flags,
            "replicas": [{"address": a, "flags": f, "link": link} for a, f, link in s.replicas],
            "other_sentinels": s.sentinels, "quorum": s.quorum}
        if s.answered is None:
            problems.append(("warning", f"no sentinel answered ({s.error}): a failover "
                                        "would not happen"))
        else:
            if "s_down" in s.flags or "o_down" in s.flags:
                problems.append(("unhealthy", f"the sentinels flag master {s.master} down "
                                              f"({s.flags})"))
            for address, flags, link in s.replicas:
                if "s_down" in flags or "disconnected" in flags or link != "ok":
                    problems.append(("warning", f"replica {address} is {flags}, link {link}"))
            fine = (f"sentinel: master {s.master}, {len(replicas)} replica(s) online, "
                    f"{(s.sentinels or 0) + 1} sentinel(s), quorum {s.quorum}")
    return _worst(problems, fine, figures)


def _eviction(masters: list[MasterState]) -> Check:
    policies = {m.address: m.info.get("maxmemory_policy", "?") for m in masters}
    problems: list[tuple[Status, str]] = []
    for address, policy in sorted(policies.items()):
        why = refusal(policy)
        if why is not None:
            problems.append(("unhealthy", f"maxmemory-policy {policy} on {address}: {why}"))
    shown = ", ".join(sorted(set(policies.values())))
    return _worst(problems, f"maxmemory-policy {shown}", {"policies": policies})


def _memory(masters: list[MasterState], t: HealthThresholds) -> Check:
    problems: list[tuple[Status, str]] = []
    nodes: dict[str, dict[str, Any]] = {}
    for m in masters:
        used, limit = m.number("used_memory") or 0, m.number("maxmemory") or 0
        ratio = used / limit if limit else None
        nodes[m.address] = {"used_memory": used, "maxmemory": limit,
                            "ratio": None if ratio is None else round(ratio, 4),
                            "evicted_keys": m.number("evicted_keys")}
        if ratio is None:
            continue
        text = (f"{m.address} uses {_mib(used)} of maxmemory {_mib(limit)} "
                f"({ratio:.0%}, policy {m.info.get('maxmemory_policy', '?')})")
        if ratio >= t.memory_unhealthy:
            problems.append(("unhealthy", text))
        elif ratio >= t.memory_warning:
            problems.append(("warning", text))
    used_total = sum(n["used_memory"] for n in nodes.values())
    limits = [n["maxmemory"] for n in nodes.values()]
    fine = (f"{_mib(used_total)} used, no maxmemory limit" if not all(limits) else
            f"{_mib(used_total)} used of {_mib(sum(limits))} maxmemory")
    return _worst(problems, fine, {"nodes": nodes})


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _hit_ratio(hits: HitCounts, t: HealthThresholds) -> Check:
    h, m = hits.total_hits, hits.total_misses
    figures: dict[str, Any] = {"hits": int(h), "misses": int(m)}
    if h + m < t.hit_ratio_min_reads:
        return Check("healthy", f"{int(h + m)} read(s) counted, too few to judge "
                     f"(under {t.hit_ratio_min_reads})", figures)
    ratio = h / (h + m)
    figures["ratio"] = round(ratio, 4)
    text = f"{ratio:.2f} over {int(h + m)} reads"
    if ratio < t.hit_ratio_warning:
        return Check("warning", f"hit ratio {text} (under {t.hit_ratio_warning}); "
                     "`thorbis-cache stats --metrics-url` names the schemas", figures)
    return Check("healthy", f"hit ratio {text}", figures)


def _queue(r: ProbeResult, t: HealthThresholds) -> Check:
    depth, oldest = r.queue_depth or 0, r.queue_oldest_seconds or 0.0
    figures = {"depth": depth, "oldest_seconds": round(oldest, 3)}
    if oldest > t.queue_lag_unhealthy:
        return Check("unhealthy", f"oldest invalidation job waiting {oldest:.0f} s (over "
                     f"{t.queue_lag_unhealthy:.0f} s): is a worker consuming the queue?",
                     figures)
    if oldest > t.queue_lag_warning or depth > t.backlog_warning:
        return Check("warning", f"{depth} job(s) waiting, oldest {oldest:.0f} s", figures)
    return Check("healthy", f"{depth} job(s) waiting", figures)


def _outbox(r: ProbeResult, t: HealthThresholds) -> Check:
    backlog, oldest = r.outbox_backlog or 0, r.outbox_oldest_seconds or 0.0
    figures = {"backlog": backlog, "oldest_seconds": round(oldest, 3)}
    if r.outbox_parked:
        # Not the worker's absence: a Cluster shard it cannot reach (the others' changes
        # are applied), which the redis checks name.
        figures["parked"] = r.outbox_parked
        return Check("unhealthy" if oldest > t.lag_unhealthy else "warning",
                     f"{backlog} change(s) waiting, oldest {oldest:.0f} s; {r.outbox_parked} "
                     "of them parked: their Redis Cluster shard does not answer "
                     "(thorbis.parked_tenants says which tenants, and why)", figures)
    if oldest > t.lag_unhealthy:
        return Check("unhealthy", f"oldest change waiting {oldest:.0f} s (over "
                     f"{t.lag_unhealthy:.0f} s): is a worker running?", figures)
    if oldest > t.lag_warning or backlog > t.backlog_warning:
        return Check("warning", f"{backlog} change(s) waiting, oldest {oldest:.0f} s",
                     figures)
    return Check("healthy", f"{backlog} change(s) waiting", figures)


def _views(h: HealthReading) -> Check:
    if h.views_error is not None:
        return Check("warning", f"freshness not read: {h.views_error}")
    views = h.views or ()
    figures = {"views": {v.view: {"health": v.health, "age_s": None if v.age_s is None
                                  else round(v.age_s, 1), "failures": v.failures}
                         for v in views}}
    problems: list[tuple[Status, str]] = []
    for v in views:
        if v.health == "stale":
            problems.append(("warning", f"{v.view} is stale ({v.age_s:.0f} s old)"))
        elif v.health == "failing":
            problems.append(("warning", f"{v.view} failing ({v.failures} failure(s): "
                                        f"{v.last_error})"))
        elif v.health == "never":
            problems.append(("warning", f"{v.view} never refreshed"))
    if problems:
        last = problems[-1]
        problems[-1] = (last[0], last[1] + " (thorbis-cache mv status)")
    return _worst(problems, f"{len(views)} view(s) fresh", figures)


def _slots(h: HealthReading, t: HealthThresholds) -> Check:
    slots = h.slots or ()
    figures = {"slots": {s.name: {"wal_status": s.wal_status, "active": s.active,
                                  "backlog_bytes": s.backlog_bytes,
                                  "sync_state": s.sync_state} for s in slots}}
    problems: list[tuple[Status, str]] = []
    for s in slots:
        if s.wal_status == "lost":
            problems.append(("unhealthy", f"slot {s.name} is lost (invalidated, or gone "
                             "while its publication is here): changes since its last "
                             "confirmed position are gone (a worker flushes what they "
                             "touched and makes it again: thorbis-cache worker)"))
        elif s.wal_status == "unreserved":
            problems.append(("warning", f"slot {s.name} is unreserved: its WAL will be "
                             "removed at the next checkpoint unless a worker catches up"))
        if s.sync_state in SYNC_CANDIDATE:
            problems.append(("warning", f"the worker reading slot {s.name} is a synchronous "
                             f"standby ({s.sync_state}: synchronous_standby_names matches "
                             "it): when no other standby answers, the host's commits wait "
                             "for the cache's invalidations; name the standbys there "
                             "instead of *"))
        if s.wal_status != "lost" and not s.active:
            problems.append(("warning", f"no worker reads slot {s.name}: changes to the "
                             "tables it publishes wait there, and their cached entries "
                             "stay stale, until one does (thorbis-cache worker)"))
        if s.backlog_bytes is not None and s.backlog_bytes > t.slot_backlog:
            problems.append(("warning", f"slot {s.name} holds {_mib(s.backlog_bytes)} of "
                             f"WAL (over {_mib(t.slot_backlog)})"))
    fine = ", ".join(f"{s.name} {s.wal_status}, {s.backlog_bytes} bytes behind"
                     for s in slots)
    return _worst(problems, fine, figures)
