-- KEYS[1] stream, KEYS[2] failures hash; ARGV[1] group, ARGV[2..] entry ids.
-- XACK + XDEL + HDEL in one step: an acknowledged entry never lingers in the stream
-- (XLEN stays the backlog). Work: O(#ids), at most one read batch.
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
redis.call('HDEL', KEYS[2], unpack(ARGV, 2))
return n
