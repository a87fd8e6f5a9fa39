-- depend: record that a key depends on another (a cascade edge).
--
-- KEYS[1]  the dependency set of the key depended on: <prefix>:~deps:{<tenant>}:<body>
-- ARGV[1]  the dependent's Redis key (same tenant, so the same slot)
-- ARGV[2]  time-to-live in milliseconds: at least the dependent's longest TTL
--
-- Returns 1 when the edge is new, else 0. The set's TTL is raised, never lowered, so an
-- edge outlives the dependent it names and the set never lingers past its members.
-- Bounds: O(1). Atomic, so the set never exists without a TTL.
local added = redis.call("SADD", KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call("PTTL", KEYS[1]) < ttl then
  redis.call("PEXPIRE", KEYS[1], ttl)
end
return added
