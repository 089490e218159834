-- today.lua — begins and completes every task of N diamonds as lua/lib.lua's begin_entry
-- and lua/complete.lua do today (unwatched: the watch key asked, no task events), on the
-- {b}: layout of setup.lua. Stream entries of released tasks are added; acks and the
-- workflow's end are left out (the same in either layout).
--
-- Not a script of its own: run.sh appends driver.lua, which calls begin and complete for
-- every task of ARGV[1] workflows.
local P = '{b}:'
local now = '1796406466152'
local result = string.rep('r', 220)
-- lib.lua's release: each child's count drops, a child at 0 is queued (also used by slim.lua).
local function release(P, wf, children)
  for c in string.gmatch(children or '', '[^,]+') do
    local ck = P .. 'wf:' .. wf .. ':t:' .. c
    if redis.call('HINCRBY', ck, 'pending', '-1') == 0 then
      local s = redis.call('HMGET', ck, 'status', 'cap', 'prio', 'name', 'attempts')
      redis.call('SADD', P .. 'caps', s[2])
      local id = redis.call('XADD', P .. 'q:' .. s[2], '*', 'wf', wf, 't', c)
      redis.call('HSET', ck, 'status', 'ready', 'ready_ms', now, 'entry', id)
    end
  end
end

local function begin(wf, i)
  local tk, wk = P .. 'wf:' .. wf .. ':t:' .. i, P .. 'wf:' .. wf
  local t = redis.call('HMGET', tk, 'status', 'entry', 'spec', 'attempts', 'max_attempts',
    'refs', 'name', 'ready_ms', 'deferrals', 'below')
  local w = redis.call('HMGET', wk, 'status', 'input')
  redis.call('HSET', tk, 'status', 'running', 'started_ms', now, 'consumer', 'c1', 'delivery', '1')
  redis.call('EXISTS', wk .. ':watch')
  local out = { 1, t[7], t[3] }
  for r in string.gmatch(t[6] or '', '[^,]+') do
    local rr = redis.call('HMGET', P .. 'wf:' .. wf .. ':t:' .. r, 'name', 'result')
    out[#out + 1] = rr[1]; out[#out + 1] = rr[2]
  end
  return out
end
-- complete.lua's work under prefix `p`; `record(tk, wk, i)` writes the result and the
-- completed status (slim.lua records them elsewhere).
local function complete_in(p, wf, i, record)
  local tk, wk = p .. 'wf:' .. wf .. ':t:' .. i, p .. 'wf:' .. wf
  local t = redis.call('HMGET', tk, 'status', 'children', 'name', 'attempts', 'entry', 'consumer', 'delivery')
  local ws = redis.call('HGET', wk, 'status')
  record(tk, wk, i)
  redis.call('EXISTS', wk .. ':watch')
  redis.call('HINCRBY', wk, 'completed', '1')
  redis.call('HINCRBY', wk, 'open', '-1')
  release(p, wf, t[2])
end
local function record(tk)
  redis.call('HSET', tk, 'status', 'completed', 'result', result, 'finished_ms', now)
end
local function complete(wf, i) complete_in(P, wf, i, record) end
