-- complete_many.lua — record the results of several deliveries in one call.
--
-- complete.lua for each delivery of ARGV: the completions a worker's handle collected while
-- its previous call was on its way (gleitzeit-queue's commit.rs), so a busy worker makes
-- one call for many tasks. The deliveries of one workflow come next to each other; for each
-- such run of two or more of a running, unwatched workflow of the packed layout, the
-- workflow is read once (its fields and every task's state and children: one HMGET), each
-- delivery fenced as complete.lua fences it, and written once: results, states, counters
-- and the released children's states in one HSET, the entries acknowledged with one XACK
-- per stream. Each child's `pending` drops by the number of its parents completing here,
-- so a child reaching 0 while waiting is queued exactly once; the workflow ends (and the
-- delivery that ended it is told, as complete.lua tells it) when its last open task ends.
-- Every other delivery (a run of one; a run naming a task twice; a workflow watched, ended,
-- expired or of an earlier layout; a fence that does not hold) is completed by
-- complete.lua's own body (script_complete), in order, after its run's grouped writes,
-- which touch no task of its own: it gets the reply it would get alone. A child released
-- here became ready at the `now` of the last of its parents completing here.
--
-- KEYS[2x-1]  {ns}:wf:<wf> of delivery x (x = 1..n)
-- KEYS[2x]    the stream delivery x's entry was read from
-- ARGV[1]  key prefix "{ns}:"
-- ARGV[2]  consumer group
-- ARGV[3]  consumer name (of every delivery)
-- ARGV[4]  events stream MAXLEN
-- ARGV[6x-1 .. 6x+4]  delivery x: entry id, delivery count, result (JSON text), now (ms),
--          workflow id, task index
--
-- Returns an array of n replies, delivery x's at x: complete.lua's reply, a code of lib.lua's
-- CODE or {CODE.OK (1), final status, duration ms} for the delivery that ended its workflow:
--   CODE.OK (1)           recorded; dependents released (when the workflow is running)
--   CODE.STALE (2)        another consumer or delivery runs the task; nothing changed
--   CODE.DUPLICATE (3)    the task is already terminal; nothing changed
--   CODE.CANCELLED (4)    cancelled while it ran; the result kept, the entry acknowledged
--   CODE.NOT_RUNNING (5)  the task was never begun; nothing changed
--   CODE.NOT_FOUND (6)    the task no longer exists; the entry is acknowledged

local group, consumer, maxlen = ARGV[2], ARGV[3], ARGV[4]
local n = (#ARGV - 4) / 6
local out = {}
-- Delivery x's arguments start after ARGV[at(x)].
local function at(x) return 6 * x - 2 end

local x = 1
while x <= n do
  local wf, wk = ARGV[at(x) + 5], KEYS[2 * x - 1]
  local y = x
  while y < n and ARGV[at(y + 1) + 5] == wf do y = y + 1 end
  -- Each run starts afresh: what the call learnt of the workflow before (its layout, its
  -- watch, its end) is for another workflow.
  use_prefix(ARGV[1])
  for z = x, y do out[z] = false end
  if y > x then
    -- A task named twice in the run sends the whole run alone, in order (the second gets
    -- what the first left, and the workflow ends with the completion that ends it).
    local get, named, twice = { 'status', 'layout', 'open', 'completed', 'watch' }, {}, false
    for z = x, y do
      local i = ARGV[at(z) + 6]
      if named[i] then twice = true end
      named[i] = true
      local N = names(i)
      get[#get + 1] = N.s; get[#get + 1] = N.k
    end
    local w = not twice and call_many('HMGET', wk, get)
    if w and w[1] == 'running' and w[2] == PACKED_LAYOUT and not w[5] then
      note_layout(wf, w[2]); note_watch(wf, w[5])
      local open, done = num(w[3]) or 0, num(w[4]) or 0
      -- h: the HSET's field/value pairs; acks: entry ids per stream (streams in order);
      -- kids, kget: the children to count down, as count_down takes them (lib.lua), each
      -- by its parents completing here and ready at the `now` of the last of them; kid_at:
      -- where a child is in kids.
      local h, acks, streams, kids, kget, kid_at = {}, {}, {}, {}, {}, {}
      local last, now
      for z = x, y do
        local b = at(z)
        local i = ARGV[b + 6]
        local st, children = w[4 + 2 * (z - x + 1)], w[5 + 2 * (z - x + 1)]
        local status, run, tentry, tconsumer, tdelivery
        if st then status, run, tentry, tconsumer, tdelivery = smatch(st, CPAT) end
        if status == 'running' and tentry == ARGV[b + 1] and
            tconsumer == consumer and tdelivery == ARGV[b + 2] then
          now = ARGV[b + 4]
          open = open - 1; done = done + 1
          local N = names(i)
          h[#h + 1] = N.s; h[#h + 1] = 'completed' .. run .. now
          h[#h + 1] = N.result; h[#h + 1] = ARGV[b + 3]
          local stream = KEYS[2 * z]
          local ids = acks[stream]
          if not ids then ids = {}; acks[stream] = ids; streams[#streams + 1] = stream end
          ids[#ids + 1] = ARGV[b + 1]
          for c, capprio in sgmatch(children or '', KPAT) do
            local q = kid_at[c]
            if not q then
              q = #kids; kid_at[c] = q
              kids[q + 1] = c; kids[q + 2] = capprio; kids[q + 3] = 0
              kget[#kget + 1] = names(c).s
            end
            kids[q + 3] = kids[q + 3] + 1; kids[q + 4] = now
          end
          out[z] = CODE.OK
          last = z
        end
      end
      if last then
        for _, stream in ipairs(streams) do rcall('XACK', stream, group, unpack(acks[stream])) end
        if #kids > 0 then count_down(wf, wk, kids, kget, 1, maxlen, h) end
        h[#h + 1] = 'completed'; h[#h + 1] = dec(done)
        h[#h + 1] = 'open'; h[#h + 1] = dec(open)
        call_many('HSET', wk, h)
        finish_if_done(wf, open, now, maxlen)
        out[last] = with_end(CODE.OK)
      end
    end
  end
  for z = x, y do
    if not out[z] then
      local b = at(z)
      out[z] = script_complete({ wk, KEYS[2 * z] }, { ARGV[1], group, ARGV[b + 1], consumer,
        ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], maxlen, wf, ARGV[b + 6] })
    end
  end
  x = y + 1
end
return out
