-- write_expire: one write command on a structure plus its TTL, atomically.
--
-- KEYS[1]   the structure's key
-- KEYS[2..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   time-to-live in milliseconds
-- ARGV[2]   "1" to delete the key first (replace the whole structure), else "0"
-- ARGV[3]   the command: ZADD or GEOADD (anything else is refused)
-- ARGV[4..] the command's arguments after the key
--
-- Returns the command's reply. Bounds: O(arguments + tags) for one command; callers pass
-- one structure's members (a list page, a day of appointments), not unbounded data.
-- Atomic, so no structure is ever left without its TTL, and none exists that its tag
-- sets (kept alive at least as long as it) do not know about.
local command = ARGV[3]
if command ~= "ZADD" and command ~= "GEOADD" then
  return redis.error_reply("write_expire: command not allowed: " .. command)
end
if ARGV[2] == "1" then
  redis.call("DEL", KEYS[1])
end
local reply = redis.call(command, KEYS[1], unpack(ARGV, 4))
redis.call("PEXPIRE", KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[1])
for i = 2, #KEYS do
  redis.call("SADD", KEYS[i], KEYS[1])
  if redis.call("PTTL", KEYS[i]) < ttl then
    redis.call("PEXPIRE", KEYS[i], ttl)
  end
end
return reply
