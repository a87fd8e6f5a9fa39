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
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
redis.call("DEL", KEYS[2])
local ttl = tonumber(ARGV[2])
for i = 3, #KEYS do
  redis.call("SADD", KEYS[i], KEYS[1])
  -- Prune up to 3 random members whose key is gone (expired, or a fill refused or
  -- failed) and that have no fill lease: they name nothing left to invalidate. With
  -- every write sampling 3, at most about a third of a busy tag set is dead.
  local prefix = string.match(KEYS[i], "^(.-):~tag:")
  for _, member in ipairs(redis.call("SRANDMEMBER", KEYS[i], 3)) do
    if redis.call("EXISTS", member) == 0 and redis.call(
        "EXISTS", prefix .. ":~lease:" .. string.sub(member, #prefix + 2)) == 0 then
      redis.call("SREM", KEYS[i], member)
    end
  end
  if redis.call("PTTL", KEYS[i]) < ttl then
    redis.call("PEXPIRE", KEYS[i], ttl)
  end
end
return 1
