-- store: write a value and revoke any fill lease on it (a write-through set).
--
-- KEYS[1]   the data key
-- KEYS[2]   its lease key (same hash slot)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   the encoded value
-- ARGV[2]   value time-to-live in milliseconds
--
-- Returns 1. Revoking the lease makes an in-flight fill that loaded older data fail
-- its compare-and-set instead of overwriting this newer value. The key is recorded in
-- its tag sets, each kept alive at least as long as the value. O(1 + tags), atomic, so
-- no value exists that its tag sets do not know about.
-- @include record_tags
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
redis.call("DEL", KEYS[2])
local ttl = tonumber(ARGV[2])
record_tags(3, ttl)
return 1
