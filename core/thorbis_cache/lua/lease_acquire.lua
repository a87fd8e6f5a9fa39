-- lease_acquire: take the fill lease of a cache key (cache-aside miss or early refresh).
--
-- KEYS[1]  the data key
-- KEYS[2]  its lease key (same hash slot: same tenant tag)
-- ARGV[1]  a fresh random lease token
-- ARGV[2]  lease time-to-live in milliseconds
-- ARGV[3]  "miss": return the value if one appeared meanwhile;
--          "refresh": the caller holds a value and wants to recompute it early
--
-- Returns {1, value}  a value is there (miss mode): use it, load nothing
--         {2}         lease granted to ARGV[1]: load, then call lease_fill
--         {3}         another client holds the lease: wait for its value
--
-- Bounds: O(1), two or three commands. Atomic, so two clients can never both be
-- granted the lease of one key, and "no value, no lease" is decided in one step.
if ARGV[3] == "miss" then
  local value = redis.call("GET", KEYS[1])
  if value then
    return {1, value}
  end
end
if redis.call("SET", KEYS[2], ARGV[1], "NX", "PX", ARGV[2]) then
  return {2}
end
return {3}
