-- lease_acquire.lua — take one in-flight slot (a lease) on one of several LLM endpoints.
--
-- Each endpoint's leases are a zset (member = lease id, score = expiry ms). Expired leases
-- (score <= now) are removed first, so the slots of a worker that died come back on their
-- own. Then one candidate with a free slot (live leases < max, or max 0 = unlimited) is
-- chosen and the lease added to it, all in one atomic step: `max` holds across the fleet.
--
-- KEYS[i]    {ns}:ep:<endpoint>:leases of candidate i (all candidates, in preference order)
-- ARGV[1]    now (ms)
-- ARGV[2]    expiry of the new lease (ms)
-- ARGV[3]    lease id
-- ARGV[4]    pick: "order" = the first candidate with a free slot; "least" = the candidate
--            with the lowest load (live leases / max; an unlimited endpoint counts as
--            leases / 1e6). Ties go to the earlier key: callers shuffle to break them at
--            random.
-- ARGV[4+i]  max concurrent leases of candidate i (0 = unlimited)
--
-- Returns {chosen, count_1, ..., count_n}: chosen is the 1-based index of the candidate
-- that got the lease (0 = every candidate is full, nothing written); count_i = live
-- leases of candidate i before this acquisition.

local now = tonumber(ARGV[1])
local expiry = ARGV[2]
local id = ARGV[3]
local pick = ARGV[4]

local counts = {}
local chosen = 0
local best = nil
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local n = redis.call('ZCARD', key)
  counts[i] = n
  local max = tonumber(ARGV[4 + i])
  if max == 0 or n < max then
    if pick == 'order' then
      if chosen == 0 then chosen = i end
    else
      local load
      if max == 0 then load = n / 1000000 else load = n / max end
      if best == nil or load < best then
        best = load
        chosen = i
      end
    end
  end
end

if chosen > 0 then
  redis.call('ZADD', KEYS[chosen], expiry, id)
end
local reply = {chosen}
for i = 1, #counts do reply[i + 1] = counts[i] end
return reply
