#!lua flags=allow-oom
-- cascade: one bounded step of a cascading invalidation (breadth first).
--
-- KEYS[1]  the frontier list  <prefix>:~cascade:{<tenant>}:<random>   (keys to delete)
-- KEYS[2]  the visited set    <prefix>:~cascade:{<tenant>}:<random>:v (keys deleted)
-- KEYS[3]  the tenant index   <prefix>:~meta:{<tenant>}
-- KEYS[4]  its slot registry  <prefix>:~tenants:{<slot tag>} (same slot)
-- ARGV[1]  at most this many frontier items popped by this call
-- ARGV[2]  at most this many dependency edges moved by this call
-- ARGV[3]  the cache prefix (to derive lease and dependency keys)
-- ARGV[4]  milliseconds the frontier and visited set may wait for the next call
-- ARGV[5]  the tenant
-- ARGV[6..] keys to push onto the frontier first (the invalidation's seeds)
--
-- Per popped key: skip it when already visited (SADD returns 0: cycles terminate and
-- a key reached twice is deleted once); otherwise delete it and its fill lease, then
-- SPOP its dependents from <prefix>:~deps:<body> onto the frontier. When the edge budget
-- runs out with dependents left, a resume marker "!" .. key goes back to the front (a
-- key never starts with "!": prefixes start with a letter), so one key with 100k
-- dependents is drained over many calls; a set is never read whole (no SMEMBERS).
-- Dependency edges are consumed: the key is gone, and a refill records them again; a
-- dependency set emptied here leaves the tenant index.
--
-- Work keys carry no TTL (supported eviction policies never evict keys without one, so
-- a cascade cannot lose its frontier to memory pressure): while the walk runs they are
-- entries of the tenant index due ARGV[4] ms after the last call, which the sweep
-- (invalidation/sweep.py) deletes if the caller died; the call that empties the
-- frontier deletes both itself (UNLINK: a large visited set is freed in the background)
-- and leaves the index, then the registry if the index is empty. allow-oom: a cascade
-- is never refused for memory (its first write, RPUSH, would be under noeviction).
--
-- Returns {frontier length, keys deleted by this call}: call again until 0.
-- Bounds: O(ARGV[1] + ARGV[2] + seeds) commands per call. Every key touched carries the
-- tenant tag of KEYS[1] (edges are only recorded within one tenant): legal on a Cluster.
-- @include record_tags
for i = 6, #ARGV do
  redis.call("RPUSH", KEYS[1], ARGV[i])
end
local max_items = tonumber(ARGV[1])
local edges = tonumber(ARGV[2])
local lease = ARGV[3] .. ":~lease:"
local deps_prefix = ARGV[3] .. ":~deps:"
local from = #ARGV[3] + 2
local deleted = 0
local popped = 0
while popped < max_items and edges > 0 do
  local item = redis.call("LPOP", KEYS[1])
  if not item then
    break
  end
  popped = popped + 1
  local key = item
  local expand = false
  if item:sub(1, 1) == "!" then
    key = item:sub(2)
    expand = true
  elseif redis.call("SADD", KEYS[2], key) == 1 then
    deleted = deleted + redis.call("UNLINK", key)
    redis.call("DEL", lease .. key:sub(from))
    expand = true
  end
  if expand then
    local deps = deps_prefix .. key:sub(from)
    local batch = redis.call("SPOP", deps, edges)
    local more = redis.call("EXISTS", deps) == 1
    if #batch > 0 then
      redis.call("RPUSH", KEYS[1], unpack(batch))
      edges = edges - #batch
      if not more then
        redis.call("ZREM", KEYS[3], deps)
      end
    end
    if edges <= 0 and more then
      redis.call("LPUSH", KEYS[1], "!" .. key)
    end
  end
end
local left = redis.call("LLEN", KEYS[1])
if left == 0 then
  redis.call("UNLINK", KEYS[2])
  redis.call("ZREM", KEYS[3], KEYS[1], KEYS[2])
  meta_close(KEYS[3], KEYS[4], ARGV[5])
else
  local due = meta_now() + tonumber(ARGV[4])
  meta_open(KEYS[3], KEYS[4], ARGV[5])
  redis.call("ZADD", KEYS[3], due, KEYS[1], due, KEYS[2])
end
return {left, deleted}
