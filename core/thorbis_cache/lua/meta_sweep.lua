#!lua flags=allow-oom
-- meta_sweep: one bounded step of the sweep of a tenant index (invalidation/sweep.py).
--
-- KEYS[1]  the tenant index   <prefix>:~meta:{<tenant>}
-- KEYS[2]  its slot registry  <prefix>:~tenants:{<slot tag>} (same slot)
-- ARGV[1]  the tenant
-- ARGV[2]  the cache prefix (to derive each member's lease key)
-- ARGV[3]  SSCAN COUNT: members examined by this call
-- ARGV[4]  the set being swept, or "" to take the first index entry that is due
-- ARGV[5]  its SSCAN cursor ("0" to start)
-- ARGV[6]  the longest remaining TTL (ms) of the live members seen so far in this pass
-- ARGV[7]  the shortest delay (ms) before a set is swept again
-- ARGV[8]  the delay (ms) for a live member without a TTL (foreign or legacy data)
--
-- An index entry names a tag, drain or dependency set, or the work key of a cascade,
-- with the time after which everything recorded in it has expired (written by the
-- scripts that record members, raised and never lowered). Once that time is past:
--   * a cascade work key is a leftover of a caller that died: it is deleted (UNLINK);
--   * a set is scanned in batches, and a member whose key is gone (expired, evicted,
--     deleted) and holds no fill lease is removed: it names nothing to invalidate. After
--     the last batch the set is due again when its longest-lived member expires;
--   * an entry whose key is gone leaves the index, and an emptied index leaves its
--     registry -- in this same atomic step, so a write that recreates the index (and
--     registers it again, see _record_tags.lua) can never be undone by the sweep.
-- allow-oom: the sweep frees memory and must run on a full server.
--
-- Returns {set swept or "" when nothing is due, next cursor ("0": done with the set),
--          members removed, longest TTL so far, 1 if the entry left the index,
--          1 if the tenant left the registry}.
-- Bounds: one SSCAN of ARGV[3] (a hint Redis follows closely for large sets; small
-- ones are encoded compactly and returned whole, 128 members at most by default) and
-- O(1) per member. Everything touched is in the tenant's slot.
-- @include record_tags
local index, registry, tenant = KEYS[1], KEYS[2], ARGV[1]
local now = meta_now()
local set, cursor, longest = ARGV[4], ARGV[5], tonumber(ARGV[6])
if set == "" then
  local due = redis.call("ZRANGE", index, "-inf", now, "BYSCORE", "LIMIT", 0, 1)
  if #due == 0 then
    local was = redis.call("ZSCORE", registry, tenant)
    meta_close(index, registry, tenant)
    local gone = (was and redis.call("EXISTS", index) == 0) and 1 or 0
    return {"", "0", 0, 0, 0, gone}
  end
  set, cursor, longest = due[1], "0", 0
end

local function leave()
  redis.call("ZREM", index, set)
  local was = redis.call("ZSCORE", registry, tenant)
  meta_close(index, registry, tenant)
  local gone = (was and redis.call("EXISTS", index) == 0) and 1 or 0
  return {set, "0", 0, longest, 1, gone}
end

local kind = redis.call("TYPE", set).ok
if kind == "none" then
  return leave()
end
if string.find(set, ":~cascade:", 1, true) then
  -- A work key still in use has had its entry pushed into the future by its last call.
  local score = tonumber(redis.call("ZSCORE", index, set) or "0")
  if score > now then
    return {set, "0", 0, longest, 0, 0}
  end
  redis.call("UNLINK", set)
  return leave()
end
if kind ~= "set" then
  -- Not ours to prune (another client's data under the name): stop tracking it.
  return leave()
end

local prefix = ARGV[2]
local lease = prefix .. ":~lease:"
local from = #prefix + 2
local recheck = tonumber(ARGV[8])
local scan = redis.call("SSCAN", set, cursor, "COUNT", tonumber(ARGV[3]))
local removed = 0
for _, member in ipairs(scan[2]) do
  local pttl = redis.call("PTTL", member)
  if pttl == -2 then
    pttl = redis.call("PTTL", lease .. member:sub(from))
  end
  if pttl == -2 then
    redis.call("SREM", set, member)
    removed = removed + 1
  else
    if pttl == -1 then
      pttl = recheck
    end
    if pttl > longest then
      longest = pttl
    end
  end
end
cursor = scan[1]
if cursor ~= "0" then
  return {set, cursor, removed, longest, 0, 0}
end
if redis.call("EXISTS", set) == 0 then
  local reply = leave()
  reply[3] = removed
  return reply
end
-- GT: a write during the pass may already have pushed the entry further.
redis.call("ZADD", index, "GT", now + math.max(longest, tonumber(ARGV[7])), set)
return {set, "0", removed, longest, 0, 0}
