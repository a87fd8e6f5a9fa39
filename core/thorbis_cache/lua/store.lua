-- store: write a value and revoke any fill lease on it (a write-through set).
--
-- KEYS[1]  the data key
-- KEYS[2]  its lease key (same hash slot)
-- ARGV[1]  the encoded value
-- ARGV[2]  value time-to-live in milliseconds
--
-- Returns 1. Revoking the lease makes an in-flight fill that loaded older data fail
-- its compare-and-set instead of overwriting this newer value. O(1), atomic.
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
redis.call("DEL", KEYS[2])
return 1
