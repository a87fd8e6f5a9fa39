-- lease_release: give back a fill lease the caller holds, so waiters take over at once.
--
-- KEYS[1]  the lease key
-- ARGV[1]  the caller's lease token
--
-- Deletes the lease when it holds the token (under any replication ID: see
-- _lease_owner.lua), else nothing. Returns 1 when deleted. O(1).
local holder = redis.call("GET", KEYS[1])
if holder and string.sub(holder, 1, #ARGV[1] + 1) == ARGV[1] .. "@" then
  return redis.call("DEL", KEYS[1])
end
return 0
