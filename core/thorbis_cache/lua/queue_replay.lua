-- KEYS[1] dead stream, KEYS[2] job stream.
-- ARGV[1] dead-letter id, ARGV[2] job stream maxlen, ARGV[3..] the new entry's fields.
-- Atomic: the job is in exactly one of the two streams at any time, and a dead letter
-- already replayed (or purged) by someone else is not replayed again. Work: O(1).
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
