-- KEYS[1] stream, KEYS[2] failures hash.
-- ARGV: group, consumer, claim_idle_ms, count, scan_count, autoclaim cursor, then the
--       backoff after 1, 2, ... deliveries (nondecreasing; the last applies beyond).
-- 1. XAUTOCLAIM entries idle > claim_idle_ms (their consumer died).
-- 2. XCLAIM failed entries (those in the failures hash) idle >= their backoff, among
--    the first scan_count pending entries idle >= the shortest backoff.
-- Returns {next cursor, {{id, fields, deliveries, last error or false}...}, #trimmed}.
-- Atomic so that reading the delivery count, claiming and dropping the failure record
-- (which marks the entry in flight again) cannot interleave with another sweeper.
-- Work: bounded by count claims and one XPENDING of scan_count rows.
local group, me = ARGV[1], ARGV[2]
local count = tonumber(ARGV[4])
local waits = #ARGV - 6
local out = {}
local function take(id, fields, deliveries)
  local err = redis.call('HGET', KEYS[2], id)
  redis.call('HDEL', KEYS[2], id)
  out[#out + 1] = {id, fields, deliveries, err}
end
local res = redis.call('XAUTOCLAIM', KEYS[1], group, me, ARGV[3], ARGV[6], 'COUNT', count)
local trimmed = res[3] or {}
for _, id in ipairs(trimmed) do redis.call('HDEL', KEYS[2], id) end
for _, e in ipairs(res[2]) do
  if e then
    local row = redis.call('XPENDING', KEYS[1], group, e[1], e[1], 1)
    take(e[1], e[2], row[1] and row[1][4] or 1)
  end
end
local rows = redis.call('XPENDING', KEYS[1], group, 'IDLE', ARGV[7], '-', '+', ARGV[5])
for _, row in ipairs(rows) do
  if #out >= count then break end
  local id, idle, n = row[1], row[3], row[4]
  if redis.call('HEXISTS', KEYS[2], id) == 1 then
    local need = tonumber(ARGV[6 + math.min(n, waits)])
    if idle >= need then
      local got = redis.call('XCLAIM', KEYS[1], group, me, need, id)
      if got[1] then take(id, got[1][2], n + 1) else redis.call('HDEL', KEYS[2], id) end
    end
  end
end
return {res[1], out, #trimmed}
