-- lease_settle.lua — return a slot lease and record what the call taught about the endpoint.
--
-- Called instead of a plain ZREM when the call's end changes the endpoint's fleet-wide state
-- (see lease_acquire.lua for the keys): a rate limit holds the endpoint back for every
-- worker; an overload answer lowers its adapted limit (multiplicative decrease); a success
-- while the limit is adapted raises it (additive increase). The arithmetic is the one of
-- gleitzeit-llm's `router::aimd`, which LocalSlots applies in a single process.
--
-- KEYS[1]  {ns}:ep:<endpoint>:leases
-- ARGV[1]  now (ms)
-- ARGV[2]  lease member
-- ARGV[3]  outcome: "grow" | "overloaded" | "hold"
-- ARGV[4]  "grow": the configured max (0 = none; a limit that reaches it is dropped);
--          "overloaded": how long the adapted limit lasts (ms);
--          "hold": how long to hold the endpoint back (ms)
--
-- Returns the endpoint's adapted limit after the call, floored (0 = not adapting).

local key = KEYS[1]
local stem = string.sub(key, 1, -8) -- without ":leases"
local now, member, outcome, arg = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local limit_key, hold_key = stem .. ':limit', stem .. ':hold'

if outcome == 'overloaded' then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  -- In flight when the server said it was overloaded, this call included.
  local in_flight = math.max(1, redis.call('ZCARD', key))
  redis.call('ZREM', key, member)
  local current = tonumber(redis.call('GET', limit_key))
  local base = in_flight
  if current and current < base then base = current end
  local next = math.max(1, math.floor(base / 2))
  redis.call('SET', limit_key, next, 'PX', arg)
  return next
end

redis.call('ZREM', key, member)
if outcome == 'grow' then
  local current = tonumber(redis.call('GET', limit_key))
  if not current then return 0 end
  local next = current + 1 / math.max(1, current)
  if arg > 0 and next >= arg then
    redis.call('DEL', limit_key)
    return 0
  end
  -- KEEPTTL: growing does not extend how long the adapted limit lasts.
  redis.call('SET', limit_key, tostring(next), 'KEEPTTL')
  return math.floor(next)
end
if outcome == 'hold' then
  if redis.call('PTTL', hold_key) < arg then
    redis.call('SET', hold_key, '1', 'PX', math.max(1, arg))
  end
end
local current = tonumber(redis.call('GET', limit_key))
if current then return math.floor(current) end
return 0
