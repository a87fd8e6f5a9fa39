-- struct_remove: remove members of a sorted set or geo index and revoke its fill lease.
--
-- KEYS[1]   the structure's key
-- KEYS[2]   its lease key (same hash slot)
-- ARGV[1..] the encoded members to remove
--
-- Returns how many members were there. A writer that removes members holds newer truth
-- than a fill in flight, so the fill is refused (lease deleted). A marker of an empty
-- set (a string) has no members to remove and stays. Bounds: O(members). Atomic.
redis.call("DEL", KEYS[2])
if redis.call("TYPE", KEYS[1]).ok ~= "zset" then
  return 0
end
return redis.call("ZREM", KEYS[1], unpack(ARGV))
