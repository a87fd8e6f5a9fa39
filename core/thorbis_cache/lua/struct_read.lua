-- struct_read: read a hash, sorted set or geo index through the cache, or take its fill
-- lease (the structure counterpart of lease_acquire.lua).
--
-- KEYS[1]   the structure's key
-- KEYS[2]   its lease key (same hash slot: same tenant tag)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   a fresh random lease token
-- ARGV[2]   lease time-to-live in milliseconds
-- ARGV[3]   the Redis type a cached structure has: "hash" or "zset" (geo indexes are zsets)
-- ARGV[4]   the read command (HGETALL, HMGET, ZRANGE, ZSCORE, ZCARD, GEOSEARCH, GEOPOS)
-- ARGV[5..] its arguments after the key
--
-- (An early refresh, which holds an answer and wants the lease only, uses
-- lease_acquire.lua's refresh mode.)
--
-- A key of another Redis type (foreign data) is deleted and treated as not cached.
--
-- Returns {1, reply, pttl}   the structure is cached: the read command's reply, and the
--                            structure's remaining time-to-live (for early recompute)
--         {4, marker, pttl}  a string marker stands at the key: the row is absent, or
--                            the member set is empty (see read_through.py)
--         {2}                lease granted to ARGV[1]: load, then call struct_fill
--         {3}                another client holds the lease: wait for its fill
--
-- A granted lease records the key in its tag sets (kept alive at least as long as the
-- lease), so a tag invalidation during the load deletes the lease and the stale fill is
-- refused, as for values.
-- Bounds: TYPE, one read command (whose cost the caller chose: a whole structure is one
-- entity or one list), PTTL, and O(tags) on a grant. Atomic, so "not cached, lease
-- granted" is one decision and an answer never mixes two fills.
-- @include record_tags
-- @include lease_owner
-- @include grant_lease
local read = ARGV[4]
if read ~= "HGETALL" and read ~= "HMGET" and read ~= "ZRANGE" and read ~= "ZSCORE"
    and read ~= "ZCARD" and read ~= "GEOSEARCH" and read ~= "GEOPOS" then
  return redis.error_reply("struct_read: command not allowed: " .. read)
end
local kind = redis.call("TYPE", KEYS[1]).ok
if kind == ARGV[3] then
  return {1, redis.call(read, KEYS[1], unpack(ARGV, 5)), redis.call("PTTL", KEYS[1])}
elseif kind == "string" then
  return {4, redis.call("GET", KEYS[1]), redis.call("PTTL", KEYS[1])}
elseif kind ~= "none" then
  -- Foreign data under our key (another Redis type): a miss; our fill replaces it.
  redis.call("UNLINK", KEYS[1])
end
return grant_lease(ARGV[1], ARGV[2])
