#!lua flags=no-writes,allow-cross-slot-keys
-- stats_sample: one SCAN page of the server that owns KEYS[1]'s slot, with each key's
-- size, TTL left and idle time (observability/stats.py, ``thorbis-cache stats``).
--
-- KEYS[1]  any key of the slot whose master must answer (it is not read): on a Cluster
--          the driver routes a script by its key, which reaches every master in turn
-- ARGV[1]  the SCAN cursor ("0" to start)
-- ARGV[2]  the SCAN COUNT hint (keys examined by this call)
--
-- Returns {next cursor, DBSIZE, idle tracked (1/0), key, bytes, pttl ms, idle s, ...}:
-- bytes -1 when the key vanished between SCAN and MEMORY USAGE; idle -1 when the
-- maxmemory-policy is an LFU one (Redis then keeps access frequencies, not times).
--
-- Bounds: one SCAN page (COUNT is a hint Redis follows closely), then O(1) per key
-- (MEMORY USAGE samples 5 elements of an aggregate). Read only (no-writes); OBJECT
-- IDLETIME, PTTL and MEMORY USAGE do not touch the key, so sampling changes no idle
-- time. allow-cross-slot-keys: the page holds keys of every slot of this master.
local page = redis.call("SCAN", ARGV[1], "COUNT", tonumber(ARGV[2]))
local out = {page[1], redis.call("DBSIZE"), 1}
for _, key in ipairs(page[2]) do
  local idle = redis.pcall("OBJECT", "IDLETIME", key)
  if type(idle) == "table" then  -- an error reply: LFU policy, or the key vanished
    if idle.err and string.find(idle.err, "LFU", 1, true) then out[3] = 0 end
    idle = -1
  elseif idle == false then
    idle = -1
  end
  local size = redis.call("MEMORY", "USAGE", key, "SAMPLES", 5)
  if size == false then size = -1 end
  out[#out + 1] = key
  out[#out + 1] = size
  out[#out + 1] = redis.call("PTTL", key)
  out[#out + 1] = idle
end
return out
