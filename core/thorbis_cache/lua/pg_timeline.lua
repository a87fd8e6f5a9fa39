#!lua flags=allow-oom
-- pg_timeline: record the PostgreSQL origin (system, database oid, timeline) the cache
-- reflects (invalidation/database_origin.py), after the flush a new one calls for.
--
-- KEYS[1]  <prefix>:~pg_origin:<database>  (no TTL: eviction must not take it)
-- ARGV[1]  <system>/<database oid>/<timeline>
--
-- allow-oom: a worker must start, and invalidate, on a Redis out of memory under
-- noeviction; a plain SET of this small string was refused there, and so was the
-- worker's connection. Bounds: O(1).
redis.call("SET", KEYS[1], ARGV[1])
return 1
