"""Memory and key counts by tenant and by schema, estimated from a bounded sample.

``await sample_stats(store, registry)`` reads every master (one on a single server or a
Sentinel group, each of a Cluster): ``SCAN`` pages of ``batch`` keys, with each key's
``MEMORY USAGE``, ``PTTL`` and ``OBJECT IDLETIME`` in the same read-only script call
(``lua/stats_sample.lua``), until the master's share of ``sample`` keys is read. Never
``KEYS``; this is an offline tool (the hot path never scans).

Each key is parsed with :meth:`SchemaRegistry.parse` (the project's one key parser):
tenant and schema; keys of the prefix that are not entries of a loaded schema (tag sets,
leases, tenant indexes, entries of plugins not loaded) are schema ``(other)`` with the
tenant of their hash tag, keys outside the prefix ``(foreign)``.

Estimates are stratified by master: a master holding ``N`` keys (``DBSIZE``) of which
``n`` were sampled counts ``N/n`` for each. ``SCAN`` walks the hash table in bucket
order and buckets are placed by a keyed hash of the key, so a page is taken as a simple
random sample of its master. The interval of a count or a share is the normal
approximation ``estimate ± z·SE`` with ``SE² = Σ N²·(1 - n/N)·s²/n`` over masters (the
finite-population correction makes it 0 for a master read completely), at the
requested confidence; memory is estimated the same way from the sampled sizes.
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from thorbis_cache.cache.keys import validate_tenant
from thorbis_cache.cache.registry import SchemaRegistry
from thorbis_cache.errors import InvalidKeyError, RedisUnavailableError
from thorbis_cache.observability.probe import MasterState, read_masters
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script, load_lua

__all__ = ["FOREIGN", "OTHER_SCHEMA", "Estimate", "GroupEstimate", "KeyStats",
           "NodeSample", "SampledKey", "TtlProfile", "sample_stats"]

#: The schema of keys of the prefix that are not entries of a loaded schema.
OTHER_SCHEMA = "(other)"
#: Tenant and schema of keys outside the prefix.
FOREIGN = "(foreign)"
#: Tenant of keys of the prefix without a tenant hash tag.
NO_TENANT = "(none)"

Progress = Callable[[int, int], None]


@functools.cache
def _script() -> Script:
    return Script("stats_sample", load_lua("stats_sample"))


@attrs.frozen(slots=True)
class SampledKey:
    """One sampled key.

    :ivar node: the master holding it.
    :ivar tenant: its tenant (:data:`NO_TENANT`, :data:`FOREIGN`).
    :ivar schema: its schema (:data:`OTHER_SCHEMA`, :data:`FOREIGN`).
    :ivar size: ``MEMORY USAGE`` in bytes.
    :ivar pttl_ms: ``PTTL`` (-1: no TTL).
    :ivar idle_s: ``OBJECT IDLETIME`` (None under an LFU policy).
    """

    node: str
    key: str
    tenant: str
    schema: str
    size: int
    pttl_ms: int
    idle_s: int | None


@attrs.frozen(slots=True)
class NodeSample:
    """What was read on one master.

    :ivar address: ``host:port``.
    :ivar dbsize: its keys (``DBSIZE``; the keys seen when read completely).
    :ivar sampled: keys sampled.
    :ivar complete: every key was read (the counts are exact).
    :ivar idle_tracked: ``OBJECT IDLETIME`` answered (not an LFU policy).
    :ivar info: its ``INFO`` (memory, stats, policy...).
    """

    address: str
    dbsize: int
    sampled: int
    complete: bool
    idle_tracked: bool
    info: dict[str, str]


@attrs.frozen(slots=True)
class Estimate:
    """An estimate and its interval."""

    value: float
    low: float
    high: float

    def as_dict(self, digits: int = 1) -> dict[str, float]:
        """``{"value", "low", "high"}`` rounded."""
        return {"value": round(self.value, digits), "low": round(self.low, digits),
                "high": round(self.high, digits)}


@attrs.frozen(slots=True)
class GroupEstimate:
    """A tenant's or a schema's keys, share of all keys and memory.

    :ivar name: the tenant or schema.
    :ivar sampled: its keys in the sample.
    :ivar keys: estimated keys.
    :ivar share: estimated share of every key of the database(s).
    :ivar memory: estimated bytes (``MEMORY USAGE`` summed).
    """

    name: str
    sampled: int
    keys: Estimate
    share: Estimate
    memory: Estimate

    def as_dict(self) -> dict[str, Any]:
        """Plain data (the JSON of ``thorbis-cache stats``)."""
        return {"name": self.name, "sampled": self.sampled, "keys": self.keys.as_dict(),
                "share": self.share.as_dict(4), "memory_bytes": self.memory.as_dict(0)}


@attrs.frozen(slots=True)
class TtlProfile:
    """How a schema's sampled entries are reused, against its TTL.

    :ivar schema: the schema.
    :ivar ttl_s: its TTL.
    :ivar judged: sampled entries old enough to judge (written over 2 s ago, idle
        time known).
    :ivar unread_share: of those, the share not read since written (idle ~ age).
    :ivar median_age_s: their median age (TTL minus TTL left).
    :ivar median_idle_read_s: the median idle time of the entries read since written
        (roughly the interval between reads); None when none was.
    """

    schema: str
    ttl_s: float
    judged: int
    unread_share: float | None
    median_age_s: float | None
    median_idle_read_s: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain data."""
        return attrs.asdict(self)


@attrs.frozen(slots=True)
class KeyStats:
    """The result of :func:`sample_stats`.

    :ivar nodes: what was read on each master.
    :ivar keys: the sampled keys.
    :ivar confidence: of the intervals.
    :ivar by_tenant: estimates per tenant, most memory first.
    :ivar by_schema: estimates per schema, most memory first.
    :ivar ttl: reuse against TTL per registered schema sampled.
    :ivar total_keys: keys of every master (``DBSIZE`` summed).
    :ivar memory: estimated bytes of every key.
    :ivar idle_unavailable: why idle times were not read (an LFU policy), or None.
    """

    nodes: tuple[NodeSample, ...]
    keys: tuple[SampledKey, ...]
    confidence: float
    by_tenant: tuple[GroupEstimate, ...]
    by_schema: tuple[GroupEstimate, ...]
    ttl: tuple[TtlProfile, ...]
    total_keys: int
    memory: Estimate
    idle_unavailable: str | None

    @property
    def method(self) -> str:
        """How the intervals are computed, in one sentence (printed with them)."""
        return (f"{self.confidence * 100:g}% intervals: normal approximation, stratified by "
                f"master, finite-population corrected; {len(self.keys)} of "
                f"{self.total_keys} keys sampled with SCAN")

    def as_dict(self) -> dict[str, Any]:
        """Plain data (the JSON of ``thorbis-cache stats``)."""
        return {
            "method": self.method, "confidence": self.confidence,
            "total_keys": self.total_keys, "sampled": len(self.keys),
            "memory_bytes": self.memory.as_dict(0),
            "nodes": [{"address": n.address, "dbsize": n.dbsize, "sampled": n.sampled,
                       "complete": n.complete, "idle_tracked": n.idle_tracked,
                       "used_memory": _int(n.info.get("used_memory")),
                       "maxmemory": _int(n.info.get("maxmemory")),
                       "maxmemory_policy": n.info.get("maxmemory_policy"),
                       "evicted_keys": _int(n.info.get("evicted_keys"))} for n in self.nodes],
            "by_tenant": [g.as_dict() for g in self.by_tenant],
            "by_schema": [g.as_dict() for g in self.by_schema],
            "ttl": [p.as_dict() for p in self.ttl],
            "idle_unavailable": self.idle_unavailable,
        }


def _int(text: str | None) -> int | None:
    return None if text is None else int(float(text))


async def sample_stats(store: RedisStore, registry: SchemaRegistry, *, prefix: str = "tc",
                       sample: int = 2000, batch: int = 250, confidence: float = 0.95,
                       progress: Progress | None = None) -> KeyStats:
    """Sample keys of every master and estimate counts and memory by tenant and schema
    (see the module docstring).

    :param store: the cache's Redis.
    :param registry: the schemas keys are parsed with (the loaded plugins').
    :param prefix: the cache's key prefix.
    :param sample: keys to sample in all (shared among masters by their ``DBSIZE``).
    :param batch: ``SCAN`` ``COUNT`` per call.
    :param confidence: of the intervals (0.5-0.99999).
    :param progress: called with (keys sampled, keys to sample) after each page.
    :raises RedisUnavailableError: a master does not answer.
    :raises ValueError: ``sample``, ``batch`` or ``confidence`` out of range.
    """
    if sample < 1 or batch < 1 or not 0.5 <= confidence < 1:
        raise ValueError(f"sample ({sample}) and batch ({batch}) must be >= 1, confidence "
                         f"({confidence}) in [0.5, 1)")
    masters = await read_masters(store, prefix)
    for m in masters:
        if m.error is not None:
            raise RedisUnavailableError("INFO", m.address, m.error)
    pages = {m.address: await _page(store, m, "0", batch) for m in masters}
    total = sum(p[1] for p in pages.values())
    want = {a: _share(sample, p[1], total) for a, p in pages.items()}
    goal = sum(want.values())
    for address, page in pages.items():
        if want[address] >= page[1]:  # every key asked for: read to the end (exact counts)
            want[address] = sys.maxsize
    seen: dict[str, dict[str, tuple[int, int, int | None]]] = {a: {} for a in pages}
    done = 0
    nodes = []
    for m in masters:
        cursor, dbsize, tracked, found = pages[m.address]
        keys = seen[m.address]
        truncated = False
        while True:
            for key, values in found.items():
                if len(keys) < want[m.address]:
                    keys[key] = values
                elif key not in keys:
                    truncated = True
            done = sum(len(k) for k in seen.values())
            if progress is not None:
                progress(min(done, goal), goal)
            if cursor == "0" or len(keys) >= want[m.address]:
                break
            cursor, dbsize, page_tracked, found = await _page(store, m, cursor, batch)
            tracked = tracked and page_tracked
        # A master read to the end: its counts are exact (whatever DBSIZE said meanwhile).
        complete = cursor == "0" and not truncated
        nodes.append(NodeSample(m.address, len(keys) if complete else max(dbsize, len(keys)),
                                len(keys), complete, tracked, m.info))
    sampled = tuple(_classify(registry, prefix, address, key, values)
                    for address, keys in seen.items() for key, values in keys.items())
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    idle_unavailable = None
    if any(not n.idle_tracked for n in nodes):
        policies = ", ".join(sorted({n.info.get("maxmemory_policy", "?") for n in nodes
                                     if not n.idle_tracked}))
        idle_unavailable = (f"OBJECT IDLETIME is not tracked under maxmemory-policy "
                            f"{policies} (LFU keeps access frequencies, not times)")
    return KeyStats(
        tuple(nodes), sampled, confidence,
        _groups(nodes, sampled, lambda k: k.tenant, z),
        _groups(nodes, sampled, lambda k: k.schema, z),
        _ttl_profiles(registry, sampled), sum(n.dbsize for n in nodes),
        _estimate(nodes, sampled, lambda k: True, lambda k: float(max(k.size, 0)), z),
        idle_unavailable)


def _share(sample: int, dbsize: int, total: int) -> int:
    if dbsize == 0:
        return 0
    return min(dbsize, max(1, round(sample * dbsize / total)))


async def _page(store: RedisStore, master: MasterState, cursor: str, batch: int) -> tuple[
        str, int, bool, dict[str, tuple[int, int, int | None]]]:
    reply = await store.run(_script(), [master.routing_key], [cursor, batch])
    found: dict[str, tuple[int, int, int | None]] = {}
    for i in range(3, len(reply) - 3, 4):
        key = reply[i].decode("utf-8", "backslashreplace")
        size, pttl, idle = int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3])
        if size >= 0:  # not gone between SCAN and MEMORY USAGE
            found[key] = (size, pttl, idle if idle >= 0 else None)
    cursor_text = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    return cursor_text, int(reply[1]), bool(int(reply[2])), found


def _classify(registry: SchemaRegistry, prefix: str, node: str, key: str,
              values: tuple[int, int, int | None]) -> SampledKey:
    size, pttl, idle = values
    try:
        parsed = registry.parse(prefix, key)
    except InvalidKeyError:
        if not key.startswith(prefix + ":"):
            return SampledKey(node, key, FOREIGN, FOREIGN, size, pttl, idle)
        return SampledKey(node, key, _hash_tag_tenant(key), OTHER_SCHEMA, size, pttl, idle)
    return SampledKey(node, key, parsed.tenant, parsed.schema.name, size, pttl, idle)


def _hash_tag_tenant(key: str) -> str:
    """The tenant of a metadata key: its hash tag, when that is a tenant id (Redis
    Cluster's rule: the first ``{...}``)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end < 0:
        return NO_TENANT
    try:
        return validate_tenant(key[start + 1:end])
    except ValueError:
        return NO_TENANT


def _estimate(nodes: Sequence[NodeSample], keys: Sequence[SampledKey],
              member: Callable[[SampledKey], bool], value: Callable[[SampledKey], float],
              z: float) -> Estimate:
    """The stratified estimate of ``Σ value`` over the keys that are ``member`` s."""
    by_node: dict[str, list[float]] = {n.address: [] for n in nodes}
    for k in keys:
        by_node[k.node].append(value(k) if member(k) else 0.0)
    total = var = 0.0
    for n in nodes:
        ys = by_node[n.address]
        if not ys:
            continue
        total += n.dbsize * statistics.fmean(ys)
        if len(ys) > 1 and not n.complete:
            fpc = 1 - len(ys) / n.dbsize
            var += n.dbsize ** 2 * fpc * statistics.variance(ys) / len(ys)
    half = z * math.sqrt(var)
    return Estimate(total, max(0.0, total - half), total + half)


def _groups(nodes: Sequence[NodeSample], keys: Sequence[SampledKey],
            label: Callable[[SampledKey], str], z: float) -> tuple[GroupEstimate, ...]:
    everything = sum(n.dbsize for n in nodes) or 1
    groups = []
    for name in sorted({label(k) for k in keys}):
        def member(k: SampledKey, name: str = name) -> bool:
            return label(k) == name
        count = _estimate(nodes, keys, member, lambda k: 1.0, z)
        share = Estimate(count.value / everything, count.low / everything,
                         min(1.0, count.high / everything))
        memory = _estimate(nodes, keys, member, lambda k: float(k.size), z)
        groups.append(GroupEstimate(name, sum(map(member, keys)), count, share, memory))
    return tuple(sorted(groups, key=lambda g: (-g.memory.value, g.name)))


def _ttl_profiles(registry: SchemaRegistry, keys: Sequence[SampledKey]
                  ) -> tuple[TtlProfile, ...]:
    profiles = []
    for name in sorted({k.schema for k in keys if k.schema in registry}):
        schema = registry.get(name)
        ttl = float(schema.ttl)
        # Jitter moves the TTL a write got by up to ttl * ttl_jitter: an age is known
        # that well, and a key is "unread" when its idle time reaches its age within it.
        slack = max(1.0, ttl * float(getattr(schema, "ttl_jitter", 0.0) or 0.0))
        ages, unread, read_idle = [], 0, []
        for k in keys:
            if k.schema != name or k.idle_s is None or k.pttl_ms < 0:
                continue
            age = max(0.0, ttl - k.pttl_ms / 1000)
            if age < 2:
                continue
            ages.append(age)
            if k.idle_s >= age - slack:
                unread += 1
            else:
                read_idle.append(float(k.idle_s))
        profiles.append(TtlProfile(
            name, ttl, len(ages), unread / len(ages) if ages else None,
            statistics.median(ages) if ages else None,
            statistics.median(read_idle) if read_idle else None))
    return tuple(profiles)
