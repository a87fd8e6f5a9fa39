-- versioned_read: the read of the versioned-tags alternative (bench prototype only;
-- the core does not use it -- see bench/invalidation.py for the evaluation).
--
-- KEYS[1]   the entry: "<epoch>,<epoch>,...|<payload>", the epochs of its tags at write
-- KEYS[2..] the tag epoch keys, in the order the entry lists them (same tenant slot)
--
-- Returns the payload when every tag epoch still equals the one written, else nil
-- (a tag was invalidated since: the entry is stale and must be treated as a miss).
-- Bounds: O(tags). Atomic, so value and epochs are read at one instant.
local entry = redis.call("GET", KEYS[1])
if not entry then
  return false
end
local bar = string.find(entry, "|", 1, true)
local header = string.sub(entry, 1, bar - 1)
local i = 2
for epoch in string.gmatch(header, "[^,]+") do
  if (redis.call("GET", KEYS[i]) or "0") ~= epoch then
    return false
  end
  i = i + 1
end
return string.sub(entry, bar + 1)
