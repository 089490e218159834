-- onehash.lua — the same work as today.lua on the {o}: layout of setup.lua: each begin and
-- completion reads and writes the task's hot state with the workflow's in one HMGET and one
-- HSET of the workflow hash, and a completion reads all its children's counts in one HMGET.
--
-- Not a script of its own: run.sh appends driver.lua, as to today.lua.
local P = '{o}:'
local now = '1796406466152'
local result = string.rep('r', 220)
local DEC = {}
local function dec(n) local s = DEC[n]; if not s then s = tostring(n); DEC[n] = s end; return s end
local function begin(wf, i)
  local tk, wk = P .. 'wf:' .. wf .. ':t:' .. i, P .. 'wf:' .. wf
  local w = redis.call('HMGET', wk, 'status', 'input', 's:' .. i, 'e:' .. i, 'a:' .. i, 'n:' .. i, 'watch')
  local t = redis.call('HMGET', tk, 'spec', 'max_attempts', 'refs', 'below')
  redis.call('HSET', wk, 's:' .. i, 'running', 'c:' .. i, 'c1', 'd:' .. i, '1', 't:' .. i, now)
  local out = { 1, w[6], t[1] }
  for r in string.gmatch(t[3] or '', '[^,]+') do
    local rr = redis.call('HGET', P .. 'wf:' .. wf .. ':t:' .. r, 'result')
    out[#out + 1] = r; out[#out + 1] = rr
  end
  return out
end
local function complete(wf, i)
  local tk, wk = P .. 'wf:' .. wf .. ':t:' .. i, P .. 'wf:' .. wf
  local w = redis.call('HMGET', wk, 'status', 'open', 'completed', 'failed', 'watch',
    's:' .. i, 'ch:' .. i, 'n:' .. i, 'a:' .. i, 'e:' .. i, 'c:' .. i, 'd:' .. i)
  redis.call('HSET', tk, 'result', result)
  local set = { 'HSET', wk, 's:' .. i, 'completed', 'f:' .. i, now,
    'open', dec(tonumber(w[2]) - 1), 'completed', dec(tonumber(w[3]) + 1) }
  local kids = {}
  for c in string.gmatch(w[7] or '', '[^,]+') do kids[#kids + 1] = c end
  if #kids > 0 then
    local ask = { 'HMGET', wk }
    for _, c in ipairs(kids) do
      ask[#ask + 1] = 'p:' .. c; ask[#ask + 1] = 's:' .. c; ask[#ask + 1] = 'cap:' .. c
    end
    local got = redis.call(unpack(ask))
    for k, c in ipairs(kids) do
      local left = tonumber(got[3 * k - 2]) - 1
      set[#set + 1] = 'p:' .. c; set[#set + 1] = dec(left)
      if left == 0 and got[3 * k - 1] == 'waiting' then
        redis.call('SADD', P .. 'caps', got[3 * k])
        local id = redis.call('XADD', P .. 'q:' .. got[3 * k], '*', 'wf', wf, 't', c)
        set[#set + 1] = 's:' .. c; set[#set + 1] = 'ready'
        set[#set + 1] = 'e:' .. c; set[#set + 1] = id
      end
    end
  end
  redis.call(unpack(set))
end
