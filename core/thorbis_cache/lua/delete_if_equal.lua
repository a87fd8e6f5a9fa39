-- delete_if_equal: delete a key only if it still holds the given bytes.
--
-- KEYS[1]  the key
-- ARGV[1]  the bytes read earlier (a corrupt entry)
--
-- Returns 1 when deleted, 0 when the key changed meanwhile. Used to drop a corrupt
-- entry without destroying a good value another client wrote in between. O(1).
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("UNLINK", KEYS[1])
end
return 0
