-- reclaim.lua — take over entries another consumer has held idle for too long.
--
-- XAUTOCLAIM (min-idle ARGV[4]) into this consumer, following the cursor until ARGV[5]
-- entries were claimed or the pending list was scanned to the end, and reads each claimed
-- entry's delivery count (XPENDING) in the same atomic step, so the counts returned are
-- exactly those the entries carry now (the caller fences complete/fail with them and
-- dead-letters entries delivered too often). Each claimed entry that is its task's current
-- entry also moves the task's `consumer` and `delivery` to this consumer and count, in
-- the same step: complete.lua fences on those fields, so from this moment the consumer
-- that held the entry before is stale exactly as if the pending list were asked. Entries
-- XAUTOCLAIM reports as deleted are dropped from the pending list by Redis and not returned;
-- entries that are not task references are acknowledged.
--
-- The endpoint leases of the consumers whose entries are taken over are freed in the same
-- step: lease members are "<consumer>|<id>" (see gleitzeit-queue's lease.rs), so every
-- lease in {ns}:ep:<endpoint>:leases (for each endpoint in {ns}:endpoints) owned by one of
-- those consumers is removed. A dead worker's slots come back when its work does, not when
-- its leases' time to live runs out. (A consumer whose entries went idle is dead or stalled;
-- if it was only stalled, the call it still runs may briefly exceed the endpoint's limit,
-- exactly as after the leases' expiry.)
--
-- KEYS[1]  the stream
-- ARGV[1]  key prefix "{ns}:" ({ns}:endpoints and the lease keys are built from it)
-- ARGV[2]  consumer group
-- ARGV[3]  consumer name
-- ARGV[4]  min idle time (ms)
-- ARGV[5]  maximum number of entries to claim (> 0)
--
-- Returns a flat list: entry id, workflow id, task index, delivery count, ...
-- (the freed leases are not reported)

local stream = KEYS[1]
local group, consumer, min_idle = ARGV[2], ARGV[3], ARGV[4]
local left = tonum(ARGV[5]) or 0

-- The owners of the entries about to be taken over (this consumer excepted).
local owners = {}
local p = rpcall('XPENDING', stream, group, 'IDLE', min_idle, '-', '+', left)
if type(p) == 'table' and p.err then
  if sfind(p.err, 'NOGROUP', 1, true) then return {} end
  return p
end
for _, e in ipairs(p) do
  if e[2] ~= consumer then owners[e[2]] = true end
end

local out = {}
local cursor = '0-0'
repeat
  local r = rpcall('XAUTOCLAIM', stream, group, consumer, min_idle, cursor, 'COUNT', left)
  if type(r) == 'table' and r.err then
    if sfind(r.err, 'NOGROUP', 1, true) then return out end
    return r
  end
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    local wf, t = entry_ref(e[2])
    if wf then
      local p = rcall('XPENDING', stream, group, e[1], e[1], 1)
      local delivery = p[1] and p[1][4] or 1
      if t_get(wf, t, 'entry') == e[1] then
        t_set(wf, t, 'consumer', consumer, 'delivery', dec(delivery))
      end
      out[#out + 1] = e[1]; out[#out + 1] = wf; out[#out + 1] = t
      out[#out + 1] = delivery
      left = left - 1
    elseif type(e[2]) == 'table' then
      ack_entry(stream, group, e[1])
    end
  end
until cursor == '0-0' or left <= 0

if #out > 0 and next(owners) ~= nil then
  for _, ep in ipairs(rcall('SMEMBERS', ENDPOINTS)) do
    local key = leases_key(ep)
    for _, m in ipairs(rcall('ZRANGE', key, 0, -1)) do
      local sep = sfind(m, '|', 1, true)
      if sep and owners[string.sub(m, 1, sep - 1)] then
        rcall('ZREM', key, m)
      end
    end
  end
end
return out
