#!lua flags=allow-oom
-- mark_applied: raise a tenant's applied-invalidation marker (never lower it: several
-- workers commit out of order) and return the value it had.
--
-- KEYS[1]  <prefix>:~applied:{<tenant>}  (no TTL: eviction must not take it)
-- ARGV[1]  the id of the invalidation_log row just applied
--
-- Run after the batch's deletes on the tenant's master, then WAITed for: a replica that
-- has the marker has every earlier write of that master. A returned value below what
-- the worker last committed proves that a failover or restart lost writes.
-- allow-oom: a Redis out of memory under noeviction still takes invalidations (deleting
-- is how memory comes back); without the flag this SET refused every worker batch, which
-- rolled back and came again until its changes were dead-lettered. The marker is one
-- small string per tenant.
-- Bounds: O(1).
local old = redis.call("GET", KEYS[1])
if not old or tonumber(old) < tonumber(ARGV[1]) then
  redis.call("SET", KEYS[1], ARGV[1])
end
return old
