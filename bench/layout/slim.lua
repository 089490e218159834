-- slim.lua — the same work as today.lua on the {s}: layout of setup.lua: the task hashes
-- hold no long values (they stay listpacks); a begin reads the spec and the referenced
-- tasks' names and results from the workflow's `:d` hash in one HMGET, and a completion
-- writes the result there.
--
-- Not a script of its own: run.sh appends it to today.lua (whose completion it uses with its
-- own recording of the result, and whose begin and complete it replaces) and driver.lua to both.
local P = '{s}:'
local function begin(wf, i)
  local tk, wk = P .. 'wf:' .. wf .. ':t:' .. i, P .. 'wf:' .. wf
  local t = redis.call('HMGET', tk, 'status', 'entry', 'attempts', 'max_attempts',
    'refs', 'name', 'ready_ms', 'deferrals', 'below')
  local w = redis.call('HMGET', wk, 'status', 'input')
  redis.call('HSET', tk, 'status', 'running', 'started_ms', now, 'consumer', 'c1', 'delivery', '1')
  redis.call('EXISTS', wk .. ':watch')
  local ask = { 'HMGET', wk .. ':d', 's:' .. i }
  for r in string.gmatch(t[5] or '', '[^,]+') do
    ask[#ask + 1] = 'n:' .. r; ask[#ask + 1] = 'r:' .. r
  end
  local d = redis.call(unpack(ask))
  local out = { 1, t[6], d[1] }
  for k = 2, #d do out[#out + 1] = d[k] end
  return out
end
local function record(tk, wk, i)
  redis.call('HSET', tk, 'status', 'completed', 'finished_ms', now)
  redis.call('HSET', wk .. ':d', 'r:' .. i, result)
end
local function complete(wf, i) complete_in(P, wf, i, record) end
