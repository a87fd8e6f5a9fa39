#!lua flags=allow-oom
-- depend: record that a key depends on another (a cascade edge).
--
-- KEYS[1]  the dependency set of the key depended on: <prefix>:~deps:{<tenant>}:<body>
-- KEYS[2]  the tenant index   <prefix>:~meta:{<tenant>}
-- KEYS[3]  its slot registry  <prefix>:~tenants:{<slot tag>} (same slot)
-- ARGV[1]  the dependent's Redis key (same tenant, so the same slot)
-- ARGV[2]  milliseconds until the dependent has surely expired (its longest TTL)
-- ARGV[3]  the tenant
--
-- Returns 1 when the edge is new, else 0. The set carries no TTL, so no supported
-- maxmemory-policy evicts it while the dependent lives (a set from an older version is
-- PERSISTed); its index entry (score raised, never lowered, to now + ARGV[2]) tells the
-- sweep (invalidation/sweep.py) when to prune it. allow-oom: under noeviction a full
-- server must still record the edge of a dependent it already holds, or a cascade
-- would miss that dependent.
-- Bounds: O(1). Atomic, so the set never exists without its index entry.
-- @include record_tags
local added = redis.call("SADD", KEYS[1], ARGV[1])
redis.call("PERSIST", KEYS[1])
meta_open(KEYS[2], KEYS[3], ARGV[3])
redis.call("ZADD", KEYS[2], "GT", meta_now() + tonumber(ARGV[2]), KEYS[1])
return added
