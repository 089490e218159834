-- lease_settle.lua — return a slot lease and record what the call taught about the endpoint.
--
-- Called instead of a plain ZREM when the call's end changes the endpoint's fleet-wide state
-- (see lease_acquire.lua for the keys): a rate limit holds the endpoint back for every
-- worker; an overload answer lowers its adapted limit (multiplicative decrease); a success
-- while the limit is adapted raises it (additive increase); an answer that reported the
-- endpoint's rate-limit budget stores it for every worker. The arithmetic is the one of
-- gleitzeit-llm's `router::aimd` and `router::budget`, which LocalSlots applies in a single
-- process.
--
-- KEYS[1]  {ns}:ep:<endpoint>:leases
-- ARGV[1]  the endpoint's key prefix: "{ns}:", or "{ns~ep~<endpoint>}:" in a namespace over
--          several shards (hold, limit and budget keys are built with keys.rs patterns)
-- ARGV[2]  endpoint name (the <endpoint> of KEYS[1])
-- ARGV[3]  now (ms)
-- ARGV[4]  lease member
-- ARGV[5]  outcome: "answered" | "grow" | "overloaded" | "hold"
-- ARGV[6]  "grow": the configured max (0 = none; a limit that reaches it is dropped);
--          "overloaded": how long the adapted limit lasts (ms);
--          "hold": how long to hold the endpoint back (ms); "answered": unused
-- ARGV[7]  "answered"/"grow": requests remaining the answer reported, "" = not reported
-- ARGV[8]  "answered"/"grow": when the requests reset (Unix ms), "" = not reported
-- ARGV[9]  "answered"/"grow": tokens remaining the answer reported, "" = not reported
-- ARGV[10] "answered"/"grow": when the tokens reset (Unix ms), "" = not reported
--          Each reported line (remaining and reset) replaces the stored one in
--          {ns}:ep:<endpoint>:budget (budget::merge); the hash expires (PEXPIREAT) at the
--          later reset of the lines it holds.
--
-- Returns the endpoint's adapted limit after the call, floored (0 = not adapting).

local key, ep = KEYS[1], ARGV[2]
local now, member, outcome, arg = tonum(ARGV[3]), ARGV[4], ARGV[5], tonum(ARGV[6])
local limit_k, hold_k, budget_k = limit_key(ep), hold_key(ep), budget_key(ep)

if outcome == 'overloaded' then
  rcall('ZREMRANGEBYSCORE', key, '-inf', ARGV[3])
  -- In flight when the server said it was overloaded, this call included.
  local in_flight = math.max(1, rcall('ZCARD', key))
  rcall('ZREM', key, member)
  local current = tonum(rcall('GET', limit_k))
  local base = in_flight
  if current and current < base then base = current end
  local next = math.max(1, math.floor(base / 2))
  rcall('SET', limit_k, next, 'PX', arg)
  return next
end

rcall('ZREM', key, member)
if outcome == 'answered' or outcome == 'grow' then
  local wrote = false
  if ARGV[7] ~= '' and ARGV[8] ~= '' then
    rcall('HSET', budget_k, 'requests', ARGV[7], 'requests_reset', ARGV[8])
    wrote = true
  end
  if ARGV[9] ~= '' and ARGV[10] ~= '' then
    rcall('HSET', budget_k, 'tokens', ARGV[9], 'tokens_reset', ARGV[10])
    wrote = true
  end
  if wrote then
    -- Forgotten at the later reset (budget::expires_ms); the reset is passed on as the
    -- text it was written as, so no float formatting touches it.
    local resets = rcall('HMGET', budget_k, 'requests_reset', 'tokens_reset')
    local r1, r2 = tonum(resets[1]) or 0, tonum(resets[2]) or 0
    local last = resets[1]
    if r2 > r1 then last = resets[2] end
    if math.max(r1, r2) > now then
      rcall('PEXPIREAT', budget_k, last)
    else
      rcall('DEL', budget_k)
    end
  end
end
if outcome == 'grow' then
  local current = tonum(rcall('GET', limit_k))
  if not current then return 0 end
  local next = current + 1 / math.max(1, current)
  if arg > 0 and next >= arg then
    rcall('DEL', limit_k)
    return 0
  end
  -- KEEPTTL: growing does not extend how long the adapted limit lasts.
  rcall('SET', limit_k, tostring(next), 'KEEPTTL')
  return math.floor(next)
end
if outcome == 'hold' then
  if rcall('PTTL', hold_k) < arg then
    rcall('SET', hold_k, '1', 'PX', math.max(1, arg))
  end
end
local current = tonum(rcall('GET', limit_k))
if current then return math.floor(current) end
return 0
