-- complete_many (a trial, not product code: bench/layout/complete-many-trial.patch loads it
-- into the function library next to complete.lua; docs/benchmarks.md, "The fourteenth
-- round").
--
-- Completes the entries of one workflow that arrive in one call together: the workflow's
-- fields and every task's state and children are read with one HMGET, the results, states,
-- counters and the released children's states written with one HSET, the entries
-- acknowledged with one XACK per stream, and each child's `pending` counted down once by the
-- number of its parents completing here. Only for a running, unwatched workflow of the packed
-- layout; returns false otherwise (the caller completes each entry with complete.lua's body),
-- and false for an entry whose fence does not hold (the same).
--
-- complete_many: KEYS[2x-1], KEYS[2x] the workflow hash and the stream of entry x;
-- ARGV[1] key prefix, ARGV[2] group, ARGV[3] consumer, ARGV[4] now (ms), ARGV[5] events
-- MAXLEN, then per entry x at ARGV[5x+1 .. 5x+5]: entry id, delivery count, result, workflow
-- id, task index. Returns one completion's reply (complete.lua's codes) per entry.
local function complete_group(wf, wk, group, consumer, now, maxlen, items)
  local get = { 'status', 'layout', 'open', 'completed', 'watch' }
  for _, it in ipairs(items) do
    local N = names(it.i)
    get[#get + 1] = N.s; get[#get + 1] = N.k
  end
  local w = call_many('HMGET', wk, get)
  if w[2] ~= 'packed' or w[1] ~= 'running' or w[5] then return false end
  note_layout(wf, w[2]); note_watch(wf, w[5])
  local open, done = num(w[3]) or 0, num(w[4]) or 0
  local h, acks, kids, order, codes = {}, {}, {}, {}, {}
  for x, it in ipairs(items) do
    local st, k = w[4 + 2 * x], w[5 + 2 * x]
    local status, run, tentry, tconsumer, tdelivery
    if st then status, run, tentry, tconsumer, tdelivery = smatch(st, CPAT) end
    if status == 'running' and tentry == it.entry and tconsumer == consumer and
        tdelivery == it.delivery then
      open = open - 1; done = done + 1
      local N = names(it.i)
      h[#h + 1] = N.s; h[#h + 1] = 'completed' .. run .. now
      h[#h + 1] = N.result; h[#h + 1] = it.result
      local a = acks[it.stream]
      if not a then a = {}; acks[it.stream] = a end
      a[#a + 1] = it.entry
      for c, capprio in sgmatch(k or '', KPAT) do
        if not kids[c] then kids[c] = { capprio, 0 }; order[#order + 1] = c end
        kids[c][2] = kids[c][2] + 1
      end
      codes[x] = CODE.OK
    else
      codes[x] = false
    end
  end
  if #order > 0 then
    local kget = {}
    for n, c in ipairs(order) do kget[n] = names(c).s end
    local v = call_many('HMGET', wk, kget)
    local caps
    for n, c in ipairs(order) do
      local st = v[n]
      if st then
        local status, pending, rest = smatch(st, LPAT)
        local left = (num(pending) or 0) - kids[c][2]
        h[#h + 1] = kget[n]
        if left == 0 and status == 'waiting' then
          local cap, stream = queue_of(kids[c][1])
          if not caps then caps = {} end
          if not caps[cap] then caps[cap] = true; rcall('SADD', CAPS, cap) end
          local id = rcall('XADD', stream, '*', 'wf', wf, 't', c)
          local attempts, runs, ended = smatch(rest, LRPAT)
          h[#h + 1] = 'ready' .. S .. '0' .. attempts .. id .. runs .. now .. ended
        else
          h[#h + 1] = status .. S .. dec(left) .. rest
        end
      end
    end
  end
  h[#h + 1] = 'completed'; h[#h + 1] = dec(done)
  h[#h + 1] = 'open'; h[#h + 1] = dec(open)
  for stream, ids in pairs(acks) do rcall('XACK', stream, group, unpack(ids)) end
  call_many('HSET', wk, h)
  finish_if_done(wf, open, now, maxlen)
  return codes
end
