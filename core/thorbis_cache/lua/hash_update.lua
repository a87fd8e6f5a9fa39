-- hash_update: partial update of an entity hash, optionally only at a given version;
-- revokes the hash's fill lease in every case.
--
-- KEYS[1]   the hash key
-- KEYS[2]   its lease key (same hash slot)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   the version field name
-- ARGV[2]   expected version, or "" to update whatever the version is
-- ARGV[3]   time-to-live in milliseconds, or "" to keep the current expiry
-- ARGV[4..] field, value, ... (the changed fields only)
--
-- Returns {1, new_version} when applied,
--         {0, current_version} on a version mismatch (nothing written),
--         {-1} when the entity is not cached (nothing written: a partial update of a
--              missing hash would create a half entity). A marker of an absent row is
--              deleted: the writer knows the row exists.
-- The caller changed the row, so a read-through fill in flight holds older data: the
-- lease is deleted first, whatever the outcome, and that fill is refused.
-- A new TTL is also applied to the tag sets (raised, never lowered), so the hash never
-- outlives the sets that name it; without one, the sets already outlive the hash.
-- Bounds: O(changed fields + tags). Atomic, so compare and write cannot interleave.
-- @include record_tags
redis.call("DEL", KEYS[2])
local kind = redis.call("TYPE", KEYS[1]).ok
if kind ~= "hash" then
  if kind == "string" then
    redis.call("UNLINK", KEYS[1])
  end
  return {-1}
end
local current = redis.call("HGET", KEYS[1], ARGV[1])
if not current then
  return {-1}
end
if ARGV[2] ~= "" and ARGV[2] ~= current then
  return {0, tonumber(current)}
end
if #ARGV >= 5 then
  redis.call("HSET", KEYS[1], unpack(ARGV, 4))
end
local version = redis.call("HINCRBY", KEYS[1], ARGV[1], 1)
if ARGV[3] ~= "" then
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
  local ttl = tonumber(ARGV[3])
  record_tags(3, ttl)
end
return {1, version}
