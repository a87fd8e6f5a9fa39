#!lua flags=no-writes
-- server_info: INFO of the server that owns KEYS[1]'s slot (eviction.py).
--
-- KEYS[1]  any key of the slot whose master must answer (it is not read): on a Cluster,
--          the driver routes a script by its key, which reaches every master in turn;
--          a plain INFO would reach one node only
-- ARGV[1]  the INFO section
--
-- Returns INFO's text. Read only (no-writes: also answers on a server out of memory,
-- which is when it matters). O(1).
return redis.call("INFO", ARGV[1])
