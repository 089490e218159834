-- lease_acquire.lua — take one in-flight slot (a lease) on one of several LLM endpoints.
--
-- Each endpoint's leases are a zset (member = "<consumer>|<lease id>", score = expiry ms).
-- Only live leases (score > now) count, so the slots of a worker that died come back on
-- their own; expired ones are removed now and then. Then one candidate with a free slot is
-- chosen and the lease added to it, all in one atomic step: limits hold across the fleet.
--
-- What the fleet learned about each endpoint (lease_settle.lua) is read next to its leases,
-- from the keys lib.lua builds for the endpoint (the patterns of keys.rs):
--   {ns}:ep:<endpoint>:hold    string with a PX expiry: the endpoint is held back (a rate
--                  limit) until it expires; a held candidate is skipped.
--   {ns}:ep:<endpoint>:limit   adapted concurrency limit (a float, with an expiry) after
--                  overload answers; the candidate's limit is the smaller of it (floored, at
--                  least 1) and max.
--   {ns}:ep:<endpoint>:budget  hash: the rate-limit budget the endpoint last reported, fields
--                  `requests`, `requests_reset`, `tokens`, `tokens_reset` (remaining, reset in
--                  Unix ms). A line is live while its reset is after now. A candidate whose
--                  live request line is 0 is held for every call until that reset; one whose
--                  live token line is below the call's estimated tokens is skipped for this
--                  call until the token reset. The chosen candidate's live lines are spent:
--                  one request and the estimate (never below 0), so the fleet does not
--                  overshoot between two answers. These are the rules of gleitzeit-llm's
--                  `router::budget`, which LocalSlots applies in a single process.
--
-- KEYS[i]    {ns}:ep:<endpoint>:leases of candidate i (all candidates, in preference order;
--            all in one slot: in a namespace over several shards, one candidate per call)
-- ARGV[1]    the endpoints' key prefix: "{ns}:", or "{ns~ep~<endpoint>}:" in a namespace over
--            several shards (hold, limit and budget keys are built with keys.rs patterns)
-- ARGV[2]    now (ms)
-- ARGV[3]    expiry of the new lease (ms)
-- ARGV[4]    lease member
-- ARGV[5]    pick: "order" = the first candidate with a free slot; "least" = the candidate
--            with the lowest load (live leases / limit; an unlimited endpoint counts as
--            leases / 1e6). Ties go to the earlier key: callers shuffle to break them at
--            random.
-- ARGV[6]    the call's estimated tokens (what it counts against a token budget)
-- ARGV[5+2i] endpoint name of candidate i (the <endpoint> of KEYS[i])
-- ARGV[6+2i] configured max concurrent leases of candidate i (0 = unlimited)
--
-- Returns {chosen, count_1..count_n, hold_1..hold_n, limit_1..limit_n, wait_1..wait_n}:
-- chosen is the 1-based index of the candidate that got the lease (0 = none could take it,
-- nothing written); count_i = live leases of candidate i before this acquisition; hold_i =
-- ms the candidate is still held back for every call, by a hold or by its spent request
-- budget (0 = not held); limit_i = its adapted limit when that is below max (0 = not
-- adapting); wait_i = ms until its token budget is reset when that is below the call's
-- estimate (0 = the call fits).

local now = tonum(ARGV[2])
local expiry = ARGV[3]
local id = ARGV[4]
local pick = ARGV[5]
local tokens = tonum(ARGV[6])
local n = #KEYS
local after_now = '(' .. ARGV[2]

local counts, holds, limits, waits, budgets = {}, {}, {}, {}, {}
local chosen = 0
local best = nil
for i, key in ipairs(KEYS) do
  local ep = ARGV[5 + 2 * i]
  -- Live leases only (expiry after now). The expired ones of a worker that died are
  -- removed by one call in sixteen (the lease ids are random hex): they are rare, since
  -- reclaim.lua frees a dead consumer's leases with its work, and counting past them
  -- costs one command per call instead of two.
  if string.byte(id, -1) == 48 then
    rcall('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
  end
  local held = rcall('ZCOUNT', key, after_now, '+inf')
  counts[i] = held
  local max = tonum(ARGV[6 + 2 * i])
  limits[i] = 0
  local adapted = tonum(rcall('GET', limit_key(ep)))
  if adapted then
    adapted = math.max(1, math.floor(adapted))
    if max == 0 or adapted < max then
      max = adapted
      limits[i] = adapted
    end
  end
  local hold = rcall('PTTL', hold_key(ep))
  if hold < 0 then hold = 0 end
  -- The budget's live lines (budget::wait_ms).
  local b = rcall('HMGET', budget_key(ep), 'requests', 'requests_reset', 'tokens',
    'tokens_reset')
  local line = {key = budget_key(ep)}
  local req_left, req_reset = tonum(b[1]), tonum(b[2])
  if req_left and req_reset and req_reset > now then
    line.requests = req_left
    if req_left <= 0 then hold = math.max(hold, req_reset - now) end
  end
  local wait = 0
  local tok_left, tok_reset = tonum(b[3]), tonum(b[4])
  if tok_left and tok_reset and tok_reset > now then
    line.tokens = tok_left
    if tok_left < tokens then wait = tok_reset - now end
  end
  budgets[i] = line
  holds[i] = hold
  waits[i] = wait
  if hold == 0 and wait == 0 and (max == 0 or held < max) then
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
  rcall('ZADD', KEYS[chosen], expiry, id)
  -- Spend from the live lines (budget::spend); HSET keeps the hash's expiry.
  local line = budgets[chosen]
  if line.requests then
    rcall('HSET', line.key, 'requests', math.max(0, line.requests - 1))
  end
  if line.tokens then
    rcall('HSET', line.key, 'tokens', math.max(0, line.tokens - tokens))
  end
end
local reply = {chosen}
for i = 1, n do reply[1 + i] = counts[i] end
for i = 1, n do reply[1 + n + i] = holds[i] end
for i = 1, n do reply[1 + 2 * n + i] = limits[i] end
for i = 1, n do reply[1 + 3 * n + i] = waits[i] end
return reply
