-- hash_replace: replace a whole entity hash, bump its version, revoke its fill lease.
--
-- KEYS[1]   the hash key
-- KEYS[2]   its lease key (same hash slot)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   the version field name
-- ARGV[2]   time-to-live in milliseconds
-- ARGV[3..] field, value, field, value, ... (the whole entity)
--
-- Returns the new version (previous version + 1, or 1). The version only grows, so a
-- writer holding an older version fails its update-if-version afterwards. Deleting the
-- lease makes a read-through fill in flight (which loaded older data) fail its
-- compare-and-set instead of overwriting this entity. A marker of an absent row at the
-- key is replaced. The hash is recorded in its tag sets, each kept alive at least as
-- long as the hash.
-- Bounds: O(fields + tags); a hash holds one entity, a few dozen fields. Atomic.
-- @include record_tags
local version = 1
if redis.call("TYPE", KEYS[1]).ok == "hash" then
  version = tonumber(redis.call("HGET", KEYS[1], ARGV[1]) or "0") + 1
end
redis.call("UNLINK", KEYS[1], KEYS[2])
redis.call("HSET", KEYS[1], ARGV[1], version, unpack(ARGV, 3))
redis.call("PEXPIRE", KEYS[1], ARGV[2])
local ttl = tonumber(ARGV[2])
record_tags(3, ttl)
return version
