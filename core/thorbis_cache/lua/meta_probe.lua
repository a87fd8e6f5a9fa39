#!lua flags=no-writes,allow-cross-slot-keys
-- meta_probe: which slot registries exist, for one page of slots (invalidation/sweep.py).
--
-- KEYS[1]   the registry of the page's first slot <prefix>:~tenants:{<slot tag>}: on a
--           Cluster it routes the call to the master serving the page
-- ARGV[1..] the registries of the page's other slots, all served by that master
--
-- Returns the positions of the registries that exist (1 for KEYS[1], 1 + i for ARGV[i]).
-- The ARGV keys are read although undeclared, which a script flagged
-- allow-cross-slot-keys may do for keys of its own node: one call probes a page instead
-- of one call per slot. If a slot moved meanwhile, a Cluster answers "non local key"
-- and the sweep probes that page slot by slot. Read only (no-writes: it also runs on a
-- server out of memory). Bounds: O(page), a few hundred EXISTS.
local found = {}
if redis.call("EXISTS", KEYS[1]) == 1 then
  found[1] = 1
end
for i = 1, #ARGV do
  if redis.call("EXISTS", ARGV[i]) == 1 then
    found[#found + 1] = i + 1
  end
end
return found
