-- struct_fill: replace a whole structure with what a loader read, only if the caller
-- still holds the fill lease (the structure counterpart of lease_fill.lua).
--
-- KEYS[1]   the structure's key
-- KEYS[2]   its lease key (same hash slot)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   the caller's lease token
-- ARGV[2]   time-to-live in milliseconds
-- ARGV[3]   the write: HSET, ZADD or GEOADD (then ARGV[4..] are its arguments after the
--           key: field value ..., score member ..., lon lat member ...), or MARKER (then
--           ARGV[4] is the string that marks an absent row or an empty member set)
-- ARGV[4]   for HSET, ZADD and GEOADD: the number of arguments per element (2 or 3)
--
-- Returns 1 when written, 0 when the lease is gone or belongs to someone else.
--
-- Every invalidation (delete, tag, cascade) and every write of a structure deletes the
-- lease key, so content loaded before an invalidation is never written after it. The
-- old content is deleted and the new one written in this one script: readers see the
-- old structure or the new one, never an empty or half-written one.
-- Bounds: O(elements + tags) for one structure's content (one entity, one list), sent
-- to the write command in chunks so no call exceeds Lua's unpack limit.
-- @include lease_owner
-- @include record_tags
if redis.call("GET", KEYS[2]) ~= lease_owner(ARGV[1]) then
  return 0
end
local write = ARGV[3]
redis.call("UNLINK", KEYS[1])
if write == "MARKER" then
  redis.call("SET", KEYS[1], ARGV[4], "PX", ARGV[2])
elseif write == "HSET" or write == "ZADD" or write == "GEOADD" then
  local arity = tonumber(ARGV[4])
  local chunk = arity * 2000
  for i = 5, #ARGV, chunk do
    redis.call(write, KEYS[1], unpack(ARGV, i, math.min(i + chunk - 1, #ARGV)))
  end
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
else
  return redis.error_reply("struct_fill: write not allowed: " .. write)
end
redis.call("DEL", KEYS[2])
local ttl = tonumber(ARGV[2])
record_tags(3, ttl)
return 1
