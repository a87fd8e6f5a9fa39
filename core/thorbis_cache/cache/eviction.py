"""Which Redis ``maxmemory-policy`` keeps invalidation correct, checked at start.

Invalidation relies on keys that list other keys: tag sets, drain sets, dependency
sets, the frontier and visited set of a cascade, the tenant indexes and their registries.
If Redis evicted one of them while an entry it names survived, invalidating the tag (or
cascading from the key) would leave that entry readable until its TTL. None of them has
a TTL, while every entry and fill lease has one, so:

* ``noeviction`` (the Redis default) never evicts: a write past ``maxmemory`` is refused
  with ``OOM`` (nothing half-written: a refused script writes nothing), while
  invalidations still run (their scripts are ``allow-oom``, and deleting frees memory);
* ``volatile-lru``, ``volatile-lfu``, ``volatile-random`` and ``volatile-ttl`` evict only
  keys with a TTL: entries (an evicted entry is a miss) and fill leases (an evicted
  lease makes its fill's compare-and-set fail, so nothing is written);
* ``allkeys-lru``, ``allkeys-lfu`` and ``allkeys-random`` may evict anything, so they are
  refused, as is any policy this module does not know.

The policy is read from ``INFO memory`` (``CONFIG GET`` is renamed or forbidden on many
managed services) on every master: through a one-line script routed by a key of a slot
each master owns, since a plain ``INFO`` on a Cluster client reaches one node only.
"""

from __future__ import annotations

import functools

from thorbis_cache.cache.meta_keys import MetaKeys
from thorbis_cache.errors import CacheBackendError, EvictionPolicyError, RedisUnavailableError
from thorbis_cache.store.redis_store import RedisStore
from thorbis_cache.store.scripts import Script, load_lua

__all__ = ["REFUSED_POLICIES", "SUPPORTED_POLICIES", "check_eviction_policy",
           "eviction_policies", "refusal"]

#: The policies under which no key without a TTL is ever evicted.
SUPPORTED_POLICIES = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random",
                      "volatile-ttl")
#: The policies Redis documents that may evict any key.
REFUSED_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")

_FIX = (
    "run `CONFIG SET maxmemory-policy volatile-lru` on every master and put "
    "`maxmemory-policy volatile-lru` in its redis.conf (or your provider's parameter "
    "group), or use noeviction; supported: " + ", ".join(SUPPORTED_POLICIES)
)


@functools.cache
def _info_script() -> Script:
    return Script("server_info", load_lua("server_info"))


async def _masters(store: RedisStore, keys: MetaKeys) -> dict[str, str]:
    """Address -> a key whose slot that master owns (one entry on a single server)."""
    if not store.is_cluster:
        return {store.address: keys.registry_of_slot(0)}
    slots = await store.command("CLUSTER SLOTS")
    masters: dict[str, str] = {}
    # redis-py parses the reply into {(first, last): {"primary": (host, port), ...}}.
    for (first, _last), node in sorted(slots.items()):
        host, port = node["primary"][:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        masters.setdefault(f"{host}:{int(port)}", keys.registry_of_slot(int(first)))
    return masters


def _field(info: object, name: str) -> str | None:
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return None


async def eviction_policies(store: RedisStore, prefix: str = "tc") -> dict[str, str]:
    """The ``maxmemory-policy`` of every master, by address.

    :param prefix: the cache's key prefix (the routing keys are named under it, so an
        ACL that limits the cache to its prefix allows them; none is read or written).
    :raises RedisUnavailableError: a server cannot be reached.
    :raises EvictionPolicyError: a server refuses ``INFO`` or does not report a policy.
    """
    keys = MetaKeys(prefix)
    policies: dict[str, str] = {}
    for address, key in (await _masters(store, keys)).items():
        try:
            info = await store.run(_info_script(), [key], ["memory"])
        except RedisUnavailableError:
            raise
        except CacheBackendError as exc:
            raise EvictionPolicyError(
                "?", address, f"INFO memory was refused ({exc.problem}); allow it to the "
                "cache's Redis user (ACL `+info`), so the policy can be checked") from exc
        policy = _field(info, "maxmemory_policy")
        if policy is None:
            raise EvictionPolicyError("?", address, "INFO memory reports no maxmemory_policy")
        policies[address] = policy
    return policies


def refusal(policy: str) -> str | None:
    """Why ``policy`` cannot keep invalidation correct, with the fix; None when it can."""
    if policy in SUPPORTED_POLICIES:
        return None
    if policy in REFUSED_POLICIES:
        why = ("Redis may evict any key, including a tag set or dependency edge whose "
               "entries survive, and invalidating that tag or key would then leave them "
               "readable until their TTL")
    else:
        why = "thorbis-cache does not know whether it evicts keys without a TTL"
    return f"{why}; {_FIX}"


async def check_eviction_policy(store: RedisStore, prefix: str = "tc") -> str:
    """Refuse a server whose eviction policy could break invalidation.

    :returns: the policy (the distinct policies of the masters, comma-separated, when
        they differ).
    :raises EvictionPolicyError: a master runs a policy outside
        :data:`SUPPORTED_POLICIES`, naming it, the server and the fix (also when its
        policy cannot be read).
    :raises RedisUnavailableError: a server cannot be reached.
    """
    policies = await eviction_policies(store, prefix)
    for address, policy in sorted(policies.items()):
        problem = refusal(policy)
        if problem is not None:
            raise EvictionPolicyError(policy, address, problem)
    return ",".join(sorted(set(policies.values())))
