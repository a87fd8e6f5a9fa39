-- write_expire: one write command on a structure plus its TTL, atomically; revokes the
-- structure's fill lease.
--
-- KEYS[1]   the structure's key
-- KEYS[2]   its lease key (same hash slot)
-- KEYS[3..] the tag sets of the key's schema (same slot; none for a schema without tags)
-- ARGV[1]   time-to-live in milliseconds
-- ARGV[2]   "1" to delete the key first (replace the whole structure), else "0"
-- ARGV[3]   the command: ZADD or GEOADD, or MARKER to store ARGV[5] (the string that
--           marks an empty member set) in place of the structure (anything else is
--           refused)
-- ARGV[4]   the number of the command's arguments per element (2 for ZADD, 3 for GEOADD)
-- ARGV[5..] the command's arguments after the key
--
-- Returns the command's reply (summed over chunks), or -1 when ARGV[2] is "0" and no
-- structure is cached: nothing is written then, since a set holding only these members
-- would be read as the whole set (the next read-through loads it whole). A writer holds
-- newer truth than a read-through fill in flight, so the lease is deleted and that fill
-- refused in every case. A marker of an empty member set (a string) is replaced by the
-- members written.
-- Bounds: O(arguments + tags) for one command; callers pass one structure's members (a
-- list page, a day of appointments), sent in chunks under Lua's unpack limit.
-- Atomic, so no structure is ever left without its TTL, and none exists that its tag
-- sets (kept alive at least as long as it) do not know about.
-- @include record_tags
local command = ARGV[3]
if command ~= "ZADD" and command ~= "GEOADD" and command ~= "MARKER" then
  return redis.error_reply("write_expire: command not allowed: " .. command)
end
redis.call("DEL", KEYS[2])
local kind = redis.call("TYPE", KEYS[1]).ok
if ARGV[2] ~= "1" and kind == "none" then
  return -1
end
if ARGV[2] == "1" or kind == "string" then
  redis.call("UNLINK", KEYS[1])
end
local reply = 0
if command == "MARKER" then
  redis.call("SET", KEYS[1], ARGV[5], "PX", ARGV[1])
else
  local chunk = tonumber(ARGV[4]) * 2000
  for i = 5, #ARGV, chunk do
    reply = reply + redis.call(command, KEYS[1], unpack(ARGV, i, math.min(i + chunk - 1, #ARGV)))
  end
  redis.call("PEXPIRE", KEYS[1], ARGV[1])
end
local ttl = tonumber(ARGV[1])
record_tags(3, ttl)
return reply
