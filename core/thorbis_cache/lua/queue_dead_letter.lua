-- KEYS[1] stream, KEYS[2] dead stream, KEYS[3] failures hash.
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] dead maxlen, ARGV[4..] field/value pairs.
-- Atomic so that a crash neither loses the entry nor leaves it in both streams; the
-- XACK guard makes a second call for the same entry (a racing consumer) a no-op.
-- The payload is copied server-side with 'p.' before each field name. Work: O(1).
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local fields = {'orig_id', ARGV[2]}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry > 0 then
  local payload = entry[1][2]
  for i = 1, #payload, 2 do
    fields[#fields + 1] = 'p.' .. payload[i]
    fields[#fields + 1] = payload[i + 1]
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
