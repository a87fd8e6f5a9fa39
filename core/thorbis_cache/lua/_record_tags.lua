-- record_tags: the step every writing script shares (included by load_lua, where a
-- script says "-- @include record_tags").
--
-- record_tags(first, ttl) adds KEYS[1] to each tag set KEYS[first..], raises each set's
-- TTL to at least ttl ms (never lowers it: a set never expires before its members),
-- and prunes up to 3 random members of each set whose key is gone (expired, or a fill
-- refused or failed) and that hold no fill lease: they name nothing left to invalidate.
-- A member being filled keeps its lease, so a tag invalidation during the load still
-- finds it. With every write sampling 3, at most about a third of a busy set is dead.
-- Bounds: O(tags) commands; members and leases are keys of the tag's tenant, so of the
-- script's slot.
local function record_tags(first, ttl)
  for i = first, #KEYS do
    redis.call("SADD", KEYS[i], KEYS[1])
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
end
