-- hash_replace: replace a whole entity hash and bump its version.
--
-- KEYS[1]  the hash key
-- ARGV[1]  the version field name
-- ARGV[2]  time-to-live in milliseconds
-- ARGV[3..] field, value, field, value, ... (the whole entity)
--
-- Returns the new version (previous version + 1, or 1). The version only grows, so a
-- writer holding an older version fails its update-if-version afterwards.
-- Bounds: O(fields); a hash holds one entity, a few dozen fields. Atomic.
local version = tonumber(redis.call("HGET", KEYS[1], ARGV[1]) or "0") + 1
redis.call("DEL", KEYS[1])
redis.call("HSET", KEYS[1], ARGV[1], version, unpack(ARGV, 3))
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return version
