-- promote.lua — move retries that are due from {ns}:delayed back onto their streams.
--
-- Takes up to ARGV[3] members of {ns}:delayed with score <= now, removes each, and queues
-- a new stream entry for every task that is still `retrying` under a running workflow
-- (status ready, ready_ms, entry). Members whose task or workflow ended meanwhile are just
-- removed. Returns the next due time so the promoter can sleep until then.
--
-- It also trims the workflow index: up to ARGV[3] members of {ns}:expiring whose expiry
-- passed are removed from it and from {ns}:workflows, so the index does not grow with
-- every workflow ever run. A member whose workflow hash still has a TTL (the client clocks
-- disagree with Redis's) is moved to that expiry instead; one whose hash has no TTL (reopened
-- by a requeue that raced the end) just leaves {ns}:expiring.
--
-- KEYS[1]  {ns}:delayed
-- ARGV[1]  key prefix "{ns}:"   (task/workflow hashes and streams are built with keys.rs
--                               patterns from the member "<wf>|<i>")
-- ARGV[2]  now (ms)
-- ARGV[3]  at most this many members are taken
-- ARGV[4]  events stream MAXLEN
--
-- Returns {moved, next due ms or nil when {ns}:delayed is empty, index entries trimmed}.

local delayed = KEYS[1]
local now, limit, maxlen = ARGV[2], ARGV[3], ARGV[4]

local moved = 0
local due = rcall('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(due) do
  rcall('ZREM', delayed, m)
  local wf, i = smatch(m, '^(.*)|(%d+)$')
  if wf then
    if t_get(wf, i, 'status') == 'retrying'
        and rcall('HGET', wf_key(wf), 'status') == 'running' then
      make_ready(wf, i, now, maxlen)
      moved = moved + 1
    end
  end
end

local trimmed = 0
local expired = rcall('ZRANGEBYSCORE', EXPIRING, '-inf', now, 'LIMIT', 0, limit)
for _, wf in ipairs(expired) do
  local left = rcall('PTTL', wf_key(wf))
  if left == -2 then
    rcall('ZREM', WORKFLOWS, wf)
    rcall('ZREM', EXPIRING, wf)
    trimmed = trimmed + 1
  elseif left == -1 then
    rcall('ZREM', EXPIRING, wf)
  else
    rcall('ZADD', EXPIRING, tonum(now) + left, wf)
  end
end

local nxt = rcall('ZRANGE', delayed, 0, 0, 'WITHSCORES')
return { moved, nxt[2] or false, trimmed }
