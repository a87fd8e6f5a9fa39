-- lease_acquire: take the fill lease of a cache key (cache-aside miss or early refresh).
--
-- KEYS[1]   the data key
-- KEYS[2]   its lease key (same hash slot: same tenant tag)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   a fresh random lease token
-- ARGV[2]   lease time-to-live in milliseconds
-- ARGV[3]   "miss": return the value if one appeared meanwhile;
--           "refresh": the caller holds a value and wants to recompute it early
--
-- Returns {1, value}  a value is there (miss mode): use it, load nothing
--         {2}         lease granted to ARGV[1]: load, then call lease_fill
--         {3}         another client holds the lease: wait for its value
--
-- A granted lease also records the key in its tag sets (each kept alive at least as long
-- as the lease): a tag invalidation issued while the value is being loaded then finds
-- the key, deletes its lease, and the stale fill is refused.
--
-- Bounds: O(1 + tags), a handful of commands. Atomic, so two clients can never both be
-- granted the lease of one key, "no value, no lease" is decided in one step, and no lease
-- exists that its tag sets do not know about.
-- @include record_tags
-- @include lease_owner
-- @include grant_lease
if ARGV[3] == "miss" then
  -- Foreign data under our key (a list, a hash...) is no value: the fill's SET
  -- replaces it.
  if redis.call("TYPE", KEYS[1]).ok == "string" then
    return {1, redis.call("GET", KEYS[1])}
  end
end
return grant_lease(ARGV[1], ARGV[2])
