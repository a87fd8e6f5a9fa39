#!lua flags=allow-oom
-- tag_invalidate: delete up to a batch of the keys recorded in one tag set.
--
-- KEYS[1]  the tag set    <prefix>:~tag:{<tenant>}:<tag>
-- KEYS[2]  its drain set  <prefix>:~drain:{<tenant>}:<tag> (same slot)
-- KEYS[3]  the tenant index <prefix>:~meta:{<tenant>}
-- KEYS[4]  its slot registry <prefix>:~tenants:{<slot tag>} (same slot)
-- KEYS[5]  cascade mode only: this invalidation's frontier list (see cascade.lua)
-- ARGV[1]  batch size: members handled by this call
-- ARGV[2]  the cache prefix (to derive each member's lease key)
-- ARGV[3]  "1" until this invalidation has moved the tag set to the drain set, else "0"
-- ARGV[4]  the tenant
-- ARGV[5]  cascade mode only: milliseconds the frontier may wait for its next call
--
-- An invalidation drains the drain set, renaming the tag set onto it once it is empty.
-- So it deletes every key recorded before it began -- including those left in the
-- drain set by an invalidation that died or is running concurrently -- and only those:
-- keys filled after the rename start a new tag set and hold data read after the change.
-- Repeated calls therefore always terminate, even on a tag refilled as fast as it is
-- drained.
--
-- Each call SPOPs up to ARGV[1] members of the drain set and, for each, deletes the key
-- and its fill lease (prefix .. ":~lease:" .. body), so an in-flight fill is refused;
-- in cascade mode it pushes them onto the frontier instead, and cascade.lua deletes
-- them with their dependents.
--
-- Tenant index: on the rename the drain set takes over the tag set's entry (its due
-- time), so a drain set left by a dead invalidation is pruned by the sweep like a tag
-- set; an emptied drain set leaves the index, and an emptied index leaves its registry.
-- Nothing here carries a TTL (see _record_tags.lua: supported eviction policies never
-- evict keys without one). allow-oom: an invalidation is never refused for memory (a
-- script without this flag is refused under OOM when its first write is a command that
-- may grow memory, such as the frontier's RPUSH), and the deletions free memory.
--
-- Returns {keys deleted, members left in the drain set, 1 if the rename happened now}:
-- call again (with ARGV[3] = "0" once renamed) until the drain set is empty.
-- Bounds: O(batch) commands per call (default 256). Members and leases are keys of
-- the tag's tenant, so of the tag set's slot: legal on a Cluster. Atomic per batch.
-- @include record_tags
local renamed = 0
if ARGV[3] == "1" and redis.call("EXISTS", KEYS[2]) == 0 then
  if redis.call("EXISTS", KEYS[1]) == 1 then
    redis.call("RENAME", KEYS[1], KEYS[2])
    redis.call("PERSIST", KEYS[2])
    local due = redis.call("ZSCORE", KEYS[3], KEYS[1]) or meta_now()
    meta_open(KEYS[3], KEYS[4], ARGV[4])
    redis.call("ZREM", KEYS[3], KEYS[1])
    redis.call("ZADD", KEYS[3], "GT", due, KEYS[2])
  end
  renamed = 1
end
local members = redis.call("SPOP", KEYS[2], tonumber(ARGV[1]))
local deleted = 0
if KEYS[5] then
  if #members > 0 then
    redis.call("RPUSH", KEYS[5], unpack(members))
    meta_open(KEYS[3], KEYS[4], ARGV[4])
    redis.call("ZADD", KEYS[3], meta_now() + tonumber(ARGV[5]), KEYS[5])
  end
else
  local lease = ARGV[2] .. ":~lease:"
  local from = #ARGV[2] + 2
  for _, member in ipairs(members) do
    deleted = deleted + redis.call("UNLINK", member)
    redis.call("DEL", lease .. member:sub(from))
  end
end
local left = redis.call("SCARD", KEYS[2])
if left == 0 and redis.call("ZREM", KEYS[3], KEYS[2]) == 1 then
  meta_close(KEYS[3], KEYS[4], ARGV[4])
end
return {deleted, left, renamed}
