-- grant_lease: the step lease_acquire and struct_read share (included by load_lua where
-- a script says "-- @include grant_lease", after record_tags).
--
-- grant_lease(token, ttl_ms) gives KEYS[2] (the fill lease of KEYS[1]) to ``token`` (as
-- lease_owner(token): include lease_owner first) for
-- ttl_ms and records KEYS[1] in its tag sets KEYS[3..], so a tag invalidation during
-- the load finds the key and revokes the lease. Returns {2} when the lease is the
-- caller's, {3} when another client holds it. Idempotent for one token: a driver that
-- retries the call after it ran (a reply lost to a reset connection) must not find its
-- own lease "held by another". Bounds: O(tags).
local function grant_lease(token, ttl_ms)
  local owner = lease_owner(token)
  local holder = redis.call("GET", KEYS[2])
  if holder == owner then
    return {2}
  end
  if holder then
    return {3}
  end
  redis.call("SET", KEYS[2], owner, "PX", ttl_ms)
  record_tags(3, tonumber(ttl_ms))
  return {2}
end
