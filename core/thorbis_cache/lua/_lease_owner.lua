-- lease_owner: what a fill lease holds (included by load_lua where a script says
-- "-- @include lease_owner", before any step that uses it).
--
-- lease_owner(token) is the caller's token and the replication ID of the server running
-- the script. Replication is asynchronous: a lease granted by a master, then revoked
-- there by an invalidation that its replicas never received, is back on the replica
-- promoted when that master dies -- with content loaded before the invalidation on its
-- way. A promoted replica (and a restarted master) has a new replication ID, so such a
-- lease no longer matches there and the fill is refused. Bounds: one INFO section.
local function lease_owner(token)
  local info = redis.call("INFO", "replication")
  return token .. "@" .. (string.match(info, "master_replid:(%x+)") or "")
end
