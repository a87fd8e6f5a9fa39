-- record_tags: the step every writing script shares (included by load_lua, where a
-- script says "-- @include record_tags"), with the tenant index helpers it needs.
--
-- record_tags(first, ttl) adds KEYS[1] to each tag set KEYS[first..] and prunes up to 3
-- random members of each set whose key is gone (expired, evicted, or a fill refused or
-- failed) and that hold no fill lease: they name nothing left to invalidate. A member
-- being filled keeps its lease, so a tag invalidation during the load still finds it.
-- With every write sampling 3, at most about a third of a busy set is dead.
--
-- Tag sets carry no TTL: under every supported maxmemory-policy (noeviction,
-- volatile-*) Redis then never evicts them, so a tag set cannot vanish while entries it
-- names survive (a set that had a TTL, written before this version, is PERSISTed when
-- it joins the index). Idle sets are bounded by the tenant index instead: ZADD GT
-- <prefix>:~meta:{<tenant>} with score now + ttl, the time after which every member
-- recorded so far has expired; invalidation/sweep.py prunes each set once it is due. An
-- index is registered in its slot's registry <prefix>:~tenants:{<slot tag>} (see
-- meta_registry) when its first entry is added (an index whose last entry goes is
-- deleted by Redis, and unregistered in that same step).
-- Bounds: O(tags) commands; members, leases, the index and the registry are keys of
-- the tag's tenant slot.

-- Milliseconds of the server clock, read once per script (scores of the index).
local meta_clock = nil
local function meta_now()
  if not meta_clock then
    local t = redis.call("TIME")
    meta_clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return meta_clock
end

-- The hash slot of a hash tag: CRC16-XMODEM mod 16384, as Redis Cluster computes it.
local function meta_slot(tag)
  local crc = 0
  for i = 1, #tag do
    crc = bit.bxor(crc, bit.lshift(string.byte(tag, i), 8))
    for _ = 1, 8 do
      crc = bit.lshift(crc, 1)
      if bit.band(crc, 0x10000) ~= 0 then
        crc = bit.bxor(crc, 0x11021)
      end
    end
  end
  return crc % 16384
end

-- The 5-character hash tag ("@".."O", 4th always "@") whose CRC16 is exactly ``slot``:
-- CRC16 is affine over strings of one length, and the low nibbles of characters 1, 2, 3
-- and 5 map onto all 16 bits, so the tag is found by XOR-ing one column per bit.
-- invalidation/sweep.py computes the same tags (and its tests check all 16384).
local META_BASE = 0x2751
local META_COLUMNS = {0xb4ae, 0x7553, 0xeaa6, 0x9368, 0x0d36, 0x4f48, 0xc4bb, 0x9579,
                      0x0114, 0x0228, 0x0b5f, 0x4c95, 0xfbe7, 0xb1ea, 0x7fdb, 0x9274}
local function meta_slot_tag(slot)
  local want = bit.bxor(slot, META_BASE)
  local x = 0
  for i = 0, 15 do
    if bit.band(want, bit.lshift(1, i)) ~= 0 then
      x = bit.bxor(x, META_COLUMNS[i + 1])
    end
  end
  return string.char(64 + bit.band(bit.rshift(x, 12), 15), 64 + bit.band(bit.rshift(x, 8), 15),
                     64 + bit.band(bit.rshift(x, 4), 15), 64, 64 + bit.band(x, 15))
end

-- The registry of ``tenant``'s slot: a key in the same slot whose name depends on the
-- slot alone, so the sweep finds every tenant index without SCAN, and registration is
-- atomic with the index's creation. The scripts that invalidation/tags.py runs are given
-- this key; record_tags derives it, only when it creates an index (absent -> present):
-- the CRC runs once per tenant index, not per write.
local function meta_registry(prefix, tenant)
  return prefix .. ":~tenants:{" .. meta_slot_tag(meta_slot(tenant)) .. "}"
end

-- Before adding an entry to ``index``: register the tenant if the index is new.
local function meta_open(index, registry, tenant)
  if redis.call("EXISTS", index) == 0 then
    redis.call("ZADD", registry, 0, tenant)
  end
end

-- After removing entries from ``index``: unregister the tenant if the index is gone.
local function meta_close(index, registry, tenant)
  if redis.call("EXISTS", index) == 0 then
    redis.call("ZREM", registry, tenant)
  end
end

local function record_tags(first, ttl)
  if first > #KEYS then
    return
  end
  local prefix, tenant = string.match(KEYS[first], "^(.-):~tag:{([^}]*)}")
  local index = prefix .. ":~meta:{" .. tenant .. "}"
  local due = meta_now() + ttl
  local lease = prefix .. ":~lease:"
  for i = first, #KEYS do
    redis.call("SADD", KEYS[i], KEYS[1])
    for _, member in ipairs(redis.call("SRANDMEMBER", KEYS[i], 3)) do
      if redis.call("EXISTS", member) == 0 and redis.call(
          "EXISTS", lease .. string.sub(member, #prefix + 2)) == 0 then
        redis.call("SREM", KEYS[i], member)
      end
    end
    -- Only a set new to the index costs more than the ZADD: it may come from an older
    -- version (with a TTL, so evictable), and it may be the index's first entry.
    if redis.call("ZADD", index, "GT", due, KEYS[i]) == 1 then
      redis.call("PERSIST", KEYS[i])
      if redis.call("ZCARD", index) == 1 then
        redis.call("ZADD", meta_registry(prefix, tenant), 0, tenant)
      end
    end
  end
end
