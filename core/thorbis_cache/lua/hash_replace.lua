-- hash_replace: replace a whole entity hash and bump its version.
--
-- KEYS[1]   the hash key
-- KEYS[2..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   the version field name
-- ARGV[2]   time-to-live in milliseconds
-- ARGV[3..] field, value, field, value, ... (the whole entity)
--
-- Returns the new version (previous version + 1, or 1). The version only grows, so a
-- writer holding an older version fails its update-if-version afterwards. The hash is
-- recorded in its tag sets, each kept alive at least as long as the hash.
-- Bounds: O(fields + tags); a hash holds one entity, a few dozen fields. Atomic.
local version = tonumber(redis.call("HGET", KEYS[1], ARGV[1]) or "0") + 1
redis.call("DEL", KEYS[1])
redis.call("HSET", KEYS[1], ARGV[1], version, unpack(ARGV, 3))
redis.call("PEXPIRE", KEYS[1], ARGV[2])
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call("SADD", KEYS[i], KEYS[1])
  if redis.call("PTTL", KEYS[i]) < ttl then
    redis.call("PEXPIRE", KEYS[i], ttl)
  end
end
return version
