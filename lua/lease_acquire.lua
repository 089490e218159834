-- lease_acquire.lua — take one in-flight slot (a lease) on one of several LLM endpoints.
--
-- Each endpoint's leases are a zset (member = "<consumer>|<lease id>", score = expiry ms).
-- Expired leases (score <= now) are removed first, so the slots of a worker that died come
-- back on their own. Then one candidate with a free slot is chosen and the lease added to
-- it, all in one atomic step: limits hold across the fleet.
--
-- What the fleet learned about each endpoint (lease_settle.lua) is read next to its leases,
-- from keys that share the leases key's stem ("{ns}:ep:<endpoint>"):
--   <stem>:hold   string with a PX expiry: the endpoint is held back (a rate limit) until it
--                 expires; a held candidate is skipped.
--   <stem>:limit  adapted concurrency limit (a float, with an expiry) after overload answers;
--                 the candidate's limit is the smaller of it (floored, at least 1) and max.
--
-- KEYS[i]    {ns}:ep:<endpoint>:leases of candidate i (all candidates, in preference order)
-- ARGV[1]    now (ms)
-- ARGV[2]    expiry of the new lease (ms)
-- ARGV[3]    lease member
-- ARGV[4]    pick: "order" = the first candidate with a free slot; "least" = the candidate
--            with the lowest load (live leases / limit; an unlimited endpoint counts as
--            leases / 1e6). Ties go to the earlier key: callers shuffle to break them at
--            random.
-- ARGV[4+i]  configured max concurrent leases of candidate i (0 = unlimited)
--
-- Returns {chosen, count_1..count_n, hold_1..hold_n, limit_1..limit_n}: chosen is the
-- 1-based index of the candidate that got the lease (0 = none could take it, nothing
-- written); count_i = live leases of candidate i before this acquisition; hold_i = ms the
-- candidate is still held back (0 = not held); limit_i = its adapted limit when that is
-- below max (0 = not adapting).

local now = tonumber(ARGV[1])
local expiry = ARGV[2]
local id = ARGV[3]
local pick = ARGV[4]
local n = #KEYS

local counts, holds, limits = {}, {}, {}
local chosen = 0
local best = nil
for i, key in ipairs(KEYS) do
  local stem = string.sub(key, 1, -8) -- without ":leases"
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  counts[i] = held
  local max = tonumber(ARGV[4 + i])
  limits[i] = 0
  local adapted = tonumber(redis.call('GET', stem .. ':limit'))
  if adapted then
    adapted = math.max(1, math.floor(adapted))
    if max == 0 or adapted < max then
      max = adapted
      limits[i] = adapted
    end
  end
  local hold = redis.call('PTTL', stem .. ':hold')
  if hold < 0 then hold = 0 end
  holds[i] = hold
  if hold == 0 and (max == 0 or held < max) then
    if pick == 'order' then
      if chosen == 0 then chosen = i end
    else
      local load
      if max == 0 then load = held / 1000000 else load = held / max end
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
for i = 1, n do reply[1 + i] = counts[i] end
for i = 1, n do reply[1 + n + i] = holds[i] end
for i = 1, n do reply[1 + 2 * n + i] = limits[i] end
return reply
