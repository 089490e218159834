#!lua name=gleitzeit_compact
-- compact.lua — an experiment, not product code: the hot path (submit, read + begin,
-- complete with release and the workflow's end) on the most compact layout of the task state
-- we could write, to measure what a new storage would save against today's scripts under
-- the same client (compact.sh, compact_drive.py).
--
-- Layout: one hash per workflow, {ns}:w:<wf>. Workflow fields st open fail input ret total
-- idem cms name policy digest [watch] fin; per task i: d<i> = "name␟refs␟max_attempts␟
-- on_failure␟below␟spec" (refs = "j␞name" joined by ␝), k<i> = its children "c␞cap␞prio"
-- joined by ␟, s<i> = its mutable state packed in one value ("status␟pending␟attempts␟entry␟
-- consumer␟delivery␟ready_ms␟started_ms␟finished_ms"), r<i> = its result. A begin reads and
-- writes one hash (one HMGET of state, definition, workflow status, input and watch flag;
-- one HMGET of the referenced results; one HSET), a completion likewise (one HMGET of its
-- state, children and the workflow fields, one of the children's states, one HSET of
-- everything, an XADD per released child, the XACK); retention is one EXPIRE per workflow.
-- The same fences as today's scripts: the entry, consumer and delivery a completion names
-- must be the task's; a child is queued once, when its count reaches 0 while waiting.
--
-- FULL = true keeps what today's scripts write besides the task state (events for the
-- workflow and for watchers, the stats counters, the workflows index and expiring zset, the
-- capability set, the idempotency key, the existence checks); compact.sh also loads it with
-- FULL = false, a bound for a layout that dropped all of those.
--
-- Functions (FCALL):
--   gleitzeit_compact_submit   KEYS[1] {ns}:w:<wf>; ARGV prefix, group, wf, name, idem,
--                              digest, policy, input, now, retention, events maxlen, N,
--                              watch ("1"|""), then per task: definition, children,
--                              number of dependencies, capability, priority.
--                              Returns {1, wf} | {10, existing} | {12, wf}.
--   gleitzeit_compact_read     KEYS the streams in priority order; ARGV prefix, group,
--                              consumer, count, now, maxlen. Returns {entries, {}} with
--                              k, id, wf, t, begin reply per entry (begin reply: {1, name,
--                              spec, attempts, max_attempts, input, ready_ms, 0, below,
--                              ref name, ref result, ...} or {9, status}).
--   gleitzeit_compact_complete KEYS {ns}:w:<wf>, the stream; ARGV prefix, group, entry,
--                              consumer, delivery, result, now, maxlen, wf, i. Returns 1,
--                              {1, final status, duration ms} when it ended the workflow,
--                              2 (stale), 3 (not running), 6 (gone).
local FULL = true
-- redis.call and friends as locals, taken on the first call (as lua/lib.lua does).
local rcall, tonum, smatch, sgmatch
local P, CAPS, WORKFLOWS, EXPIRING, STATS
local function init(prefix)
  if not rcall then
    rcall, tonum, smatch, sgmatch = redis.call, tonumber, string.match, string.gmatch
  end
  if prefix ~= P then
    P = prefix
    CAPS, WORKFLOWS, EXPIRING, STATS = P .. 'caps', P .. 'workflows', P .. 'expiring', P .. 'stats'
  end
end
-- Field names and decimal text built once per index and kept with the library: each `..`
-- or tostring makes and interns a new string (lua/lib.lua's dec() says the same).
local FD, FS, FK, FR, DEC = {}, {}, {}, {}, {}
local function dec(n)
  local s = DEC[n]
  if s then return s end
  s = tostring(n); DEC[n] = s; return s
end
local function fd(i) local f = FD[i]; if not f then f = 'd' .. i; FD[i] = f end; return f end
local function fs(i) local f = FS[i]; if not f then f = 's' .. i; FS[i] = f end; return f end
local function fk(i) local f = FK[i]; if not f then f = 'k' .. i; FK[i] = f end; return f end
local function fr(i) local f = FR[i]; if not f then f = 'r' .. i; FR[i] = f end; return f end
local function stream_key(cap, prio)
  if prio == 'high' then return P .. 'q:' .. cap .. '#high' end
  if prio == 'low' then return P .. 'q:' .. cap .. '#low' end
  return P .. 'q:' .. cap
end
-- A task's state, packed: status pending attempts entry consumer delivery ready_ms
-- started_ms finished_ms, separated by \31 (SPAT reads it back in the same order).
local SPAT = '^(%a+)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)$'
local function state(status, pending, attempts, entry, consumer, delivery, ready, started, finished)
  return status .. '\31' .. pending .. '\31' .. attempts .. '\31' .. entry .. '\31' .. consumer ..
    '\31' .. delivery .. '\31' .. ready .. '\31' .. started .. '\31' .. finished
end

local function emit(wf, maxlen, now, kind, status, task, i)
  local ek = P .. 'w:' .. wf .. ':events'
  if task then
    rcall('XADD', ek, 'MAXLEN', '~', maxlen, '*', 'kind', kind, 'status', status, 'ms', now, 'task', task, 'i', i)
  else
    rcall('XADD', ek, 'MAXLEN', '~', maxlen, '*', 'kind', kind, 'status', status, 'ms', now)
  end
end

local function submit(keys, args)
  init(args[1])
  local wk = keys[1]
  local group, wf, name, idem, digest, policy, input, now, ret, maxlen, total, watch =
    args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10], args[11], args[12], args[13]
  if FULL and idem ~= '' then
    local v = rcall('GET', P .. 'idem:' .. idem)
    if v then return { 10, v } end
  end
  if FULL and rcall('EXISTS', wk) == 1 then return { 12, wf } end
  local n = tonum(total)
  local h = { 'HSET', wk, 'st', 'running', 'open', total, 'input', input, 'fail', '0', 'ret', ret,
    'total', total, 'idem', idem, 'cms', now, 'name', name, 'policy', policy, 'digest', digest }
  local seen = {}
  for k = 0, n - 1 do
    local a = 14 + k * 5
    local d, kids, deps, cap, prio = args[a], args[a + 1], args[a + 2], args[a + 3], args[a + 4]
    local s = stream_key(cap, prio)
    if FULL and not seen[s] then
      seen[s] = true
      if rcall('EXISTS', s) == 0 then rcall('XGROUP', 'CREATE', s, group, '0', 'MKSTREAM') end
      rcall('SADD', CAPS, cap)
    end
    local i = dec(k)
    local st
    if deps == '0' then
      local id = rcall('XADD', s, '*', 'wf', wf, 't', i)
      st = state('ready', '0', '0', id, '', '', now, '', '')
    else
      st = state('waiting', deps, '0', '', '', '', '', '', '')
    end
    h[#h + 1] = fd(i); h[#h + 1] = d
    h[#h + 1] = fs(i); h[#h + 1] = st
    if kids ~= '' then h[#h + 1] = fk(i); h[#h + 1] = kids end
  end
  if watch == '1' then h[#h + 1] = 'watch'; h[#h + 1] = '1' end
  rcall(unpack(h))
  if FULL then
    rcall('ZADD', WORKFLOWS, now, wf)
    rcall('HINCRBY', STATS, 'workflows_submitted', '1')
    if idem ~= '' then rcall('SET', P .. 'idem:' .. idem, wf .. '\n' .. digest) end
    emit(wf, maxlen, now, 'workflow', 'submitted')
  end
  return { 1, wf }
end

local DPAT = '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31(.*)$'
local function begin_entry(stream, group, entry, consumer, now, maxlen, wf, i, delivery)
  local wk = P .. 'w:' .. wf
  local w = rcall('HMGET', wk, 'st', 'input', 'watch', fs(i), fd(i))
  if not w[1] then
    rcall('XACK', stream, group, entry)
    return { 9, 'missing' }
  end
  local status, pending, attempts, e, _, _, ready, _, _ = smatch(w[4], SPAT)
  if (status ~= 'ready' and status ~= 'running') or e ~= entry or w[1] ~= 'running' then
    rcall('XACK', stream, group, entry)
    return { 9, status }
  end
  local tname, refs, maxa, _, below, spec = smatch(w[5], DPAT)
  rcall('HSET', wk, fs(i), state('running', pending, attempts, entry, consumer, delivery, ready, now, ''))
  if FULL and w[3] then emit(wf, maxlen, now, 'task', 'running', tname, i) end
  local out = { 1, tname, spec, tonum(attempts), tonum(maxa) or 1, w[2], ready, 0, tonum(below) or 0 }
  if refs ~= '' then
    local names, f = {}, { 'HMGET', wk }
    for j, rn in sgmatch(refs, '(%d+)\30([^\29]*)') do
      names[#names + 1] = rn; f[#f + 1] = fr(j)
    end
    local rr = rcall(unpack(f))
    for x = 1, #names do
      out[#out + 1] = names[x]; out[#out + 1] = rr[x]
    end
  end
  return out
end

local function read(keys, args)
  init(args[1])
  local group, consumer, left, now, maxlen = args[2], args[3], tonum(args[4]), args[5], args[6]
  local out = {}
  for k = 1, #keys do
    if left <= 0 then break end
    local r = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', left, 'STREAMS', keys[k], '>')
    if type(r) == 'table' and r.err then
      rcall('XGROUP', 'CREATE', keys[k], group, '0', 'MKSTREAM')
      r = rcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', left, 'STREAMS', keys[k], '>')
    end
    if r and r[1] then
      for _, e in ipairs(r[1][2]) do
        local f = e[2]
        local wf, t = f[2], f[4]
        out[#out + 1] = k; out[#out + 1] = e[1]; out[#out + 1] = wf; out[#out + 1] = t
        out[#out + 1] = begin_entry(keys[k], group, e[1], consumer, now, maxlen, wf, t, '1')
        left = left - 1
      end
    end
  end
  return { out, {} }
end

local KPAT = '(%d+)\30([^\30]*)\30([^\31]*)'
local function complete(keys, args)
  init(args[1])
  local wk, stream = keys[1], keys[2]
  local group, entry, consumer, delivery, result, now, maxlen, wf, i =
    args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10]
  local w = rcall('HMGET', wk, fs(i), fk(i), 'st', 'watch', 'open', 'fail', 'cms', 'ret', 'idem')
  if not w[1] then
    rcall('XACK', stream, group, entry)
    return 6
  end
  local status, pending, attempts, e, c, d, ready, started = smatch(w[1], SPAT)
  if e ~= entry or c ~= consumer or d ~= delivery then return 2 end
  if status ~= 'running' then return 3 end
  local h = { 'HSET', wk, fs(i), state('completed', pending, attempts, entry, consumer, delivery, ready, started, now),
    fr(i), result }
  local open = tonum(w[5]) - 1
  h[#h + 1] = 'open'; h[#h + 1] = dec(open)
  if w[3] == 'running' and w[2] then
    local kids, f = {}, { 'HMGET', wk }
    for ci, cap, prio in sgmatch(w[2], KPAT) do
      kids[#kids + 1] = { ci, cap, prio }; f[#f + 1] = fs(ci)
    end
    local cs = rcall(unpack(f))
    local caps = {}
    for x = 1, #kids do
      local ci, cap, prio = kids[x][1], kids[x][2], kids[x][3]
      local cst, cp, ca, ce, cc, cd, cr, cb = smatch(cs[x], SPAT)
      local left = tonum(cp) - 1
      if left == 0 and cst == 'waiting' then
        if FULL and not caps[cap] then caps[cap] = true; rcall('SADD', CAPS, cap) end
        local id = rcall('XADD', stream_key(cap, prio), '*', 'wf', wf, 't', ci)
        h[#h + 1] = fs(ci); h[#h + 1] = state('ready', '0', ca, id, '', '', now, '', '')
        if FULL and w[4] then emit(wf, maxlen, now, 'task', 'ready', '', ci) end
      else
        h[#h + 1] = fs(ci); h[#h + 1] = state(cst, dec(left), ca, ce, cc, cd, cr, cb, '')
      end
    end
  end
  local ended
  if open <= 0 and w[3] == 'running' then
    local final = (tonum(w[6]) or 0) > 0 and 'failed' or 'completed'
    h[#h + 1] = 'st'; h[#h + 1] = final; h[#h + 1] = 'fin'; h[#h + 1] = now
    ended = { 1, final, tonum(now) - tonum(w[7]) }
  end
  rcall(unpack(h))
  rcall('XACK', stream, group, entry)
  if FULL and w[4] then emit(wf, maxlen, now, 'task', 'completed', '', i) end
  if ended then
    local ret = w[8]
    rcall('EXPIRE', wk, ret)
    if FULL then
      rcall('HINCRBY', STATS, 'workflows_' .. ended[2], '1')
      emit(wf, maxlen, now, 'workflow', ended[2])
      rcall('EXPIRE', P .. 'w:' .. wf .. ':events', ret)
      if w[9] and w[9] ~= '' then rcall('EXPIRE', P .. 'idem:' .. w[9], ret) end
      rcall('ZADD', EXPIRING, tonum(now) + tonum(ret) * 1000, wf)
    end
    return ended
  end
  return 1
end

redis.register_function{function_name = 'gleitzeit_compact_submit', callback = submit}
redis.register_function{function_name = 'gleitzeit_compact_read', callback = read,
  flags = { 'allow-oom' }}
redis.register_function{function_name = 'gleitzeit_compact_complete', callback = complete,
  flags = { 'allow-oom' }}
