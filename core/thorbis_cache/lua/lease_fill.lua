-- lease_fill: write a loaded value only if the caller still holds the fill lease.
--
-- KEYS[1]   the data key
-- KEYS[2]   its lease key (same hash slot)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   the caller's lease token
-- ARGV[2]   the encoded value
-- ARGV[3]   value time-to-live in milliseconds
--
-- Returns 1 when written, 0 when the lease is gone or belongs to someone else.
--
-- Every invalidation (delete, set, tag, cascade) deletes the lease key, so a value loaded
-- before an invalidation can never be written after it: the compare and the set happen
-- in one atomic step. The written key is (re)recorded in its tag sets, whose TTL is
-- raised to at least the value's, so a tag set never expires before its members.
-- Bounds: O(1 + tags).
-- @include lease_owner
-- @include record_tags
if redis.call("GET", KEYS[2]) ~= lease_owner(ARGV[1]) then
  return 0
end
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
redis.call("DEL", KEYS[2])
local ttl = tonumber(ARGV[3])
record_tags(3, ttl)
return 1
