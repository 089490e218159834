-- requeue.lua — put the task of one dead letter back to work and reopen its workflow.
--
-- The dead letter (an entry of {ns}:dead) names a workflow and a task. When the workflow
-- still exists, was not cancelled, and the task is still failed, atomically:
--   * the task becomes ready again with attempts reset to 0: its error, retry and finish
--     times are cleared, `requeued` counts how often this happened, and a new entry
--     {wf, t} is queued on its capability stream (event "ready");
--   * every task that the failure closed is reopened: a task that is skipped or cancelled
--     is reopened when none of its dependencies is failed, cancelled or skipped (tasks are
--     visited in dependency order, so whole chains reopen in one pass). Its `pending`
--     is recomputed as the number of dependencies not completed (a dependency that completed
--     after the workflow had ended released nothing); it becomes ready when that is 0, else
--     waiting (event "waiting"). Tasks below another task that is still failed stay closed;
--     other failed tasks stay failed (requeue their own dead letters);
--   * the workflow counters follow (failed - 1, skipped/cancelled - reopened, open + all);
--     a workflow that had ended becomes running again: finished_ms is removed, the retention
--     TTL is lifted from its keys (and it leaves {ns}:expiring), and a workflow event "running" is emitted. It ends again
--     like any workflow, when its last open task ends (failed if a task is still failed);
--     the failure policy of a task that is still failed is not applied again;
--   * the dead letter is deleted.
-- Nothing is written on a refusal.
--
-- KEYS[1]  {ns}:dead
-- ARGV[1]  key prefix "{ns}:"   (the workflow hash, task hashes of the earlier layout,
--                               streams and the events stream are built with keys.rs
--                               patterns from the dead letter's fields)
-- ARGV[2]  dead-letter entry id
-- ARGV[3]  now (ms)
-- ARGV[4]  events stream MAXLEN
--
-- Returns {code, workflow id, task index, tasks reopened, 1 if the workflow was reopened},
-- code one of lib.lua's CODE:
--   CODE.OK (1)           requeued as described above
--   CODE.NOT_FOUND (6)    no dead letter with this id (or it names no task); nothing changed
--   CODE.EXPIRED (14)     the workflow no longer exists (its retention ended); nothing changed
--   CODE.CANCELLED (4)    the workflow was cancelled by a user; nothing changed
--   CODE.NOT_FAILED (15)  the task is not failed any more (already requeued); nothing changed

local dead = KEYS[1]
local id, now, maxlen = ARGV[2], ARGV[3], ARGV[4]

local found = rcall('XRANGE', dead, id, id)
if #found == 0 then return { CODE.NOT_FOUND, '', -1, 0, 0 } end
-- Dead letters carry the fields `wf` and `task` (see fail.lua).
local wf, i
local f = found[1][2]
for k = 1, #f, 2 do
  if f[k] == 'wf' then wf = f[k + 1] elseif f[k] == 'task' then i = f[k + 1] end
end
if i and not smatch(i, '^%d+$') then wf = nil end
if not wf or not i then return { CODE.NOT_FOUND, '', -1, 0, 0 } end
local idx = tonum(i)

local wk = wf_key(wf)
local w = rcall('HMGET', wk, 'status', 'total', 'idem')
if not w[1] then return { CODE.EXPIRED, wf, idx, 0, 0 } end
if w[1] == 'cancelled' then return { CODE.CANCELLED, wf, idx, 0, 0 } end
if t_get(wf, i, 'status') ~= 'failed' then return { CODE.NOT_FAILED, wf, idx, 0, 0 } end

local total = tonum(w[2]) or 0

-- Reopen an ended workflow first, so its "running" event precedes the tasks' events:
-- running again, and its keys no longer expire.
local was_ended = 0
if w[1] ~= 'running' then
  was_ended = 1
  rcall('HSET', wk, 'status', 'running')
  rcall('HDEL', wk, 'finished_ms')
  rcall('PERSIST', wk)
  if not in_wf(wf) then
    for j = 0, total - 1 do
      rcall('PERSIST', task_key(wf, dec(j)))
    end
  end
  rcall('PERSIST', events_key(wf))
  if w[3] and w[3] ~= '' then
    rcall('PERSIST', idem_key(w[3]))
  end
  rcall('ZREM', EXPIRING, wf)
  emit(wf, maxlen, now, 'workflow', nil, nil, 'running', nil)
end

-- The task itself.
t_del(wf, i, 'error', 'finished_ms', 'started_ms', 'retry_ms')
t_set(wf, i, 'attempts', '0')
t_incr(wf, i, 'requeued', '1')
make_ready(wf, i, now, maxlen)
rcall('HINCRBY', wk, 'failed', '-1')
local opened = 1

-- Parents of every task (the hashes store children only) and a topological order (Kahn), so
-- one pass in that order sees every parent's final status before its children.
local status, parents, children, indegree = {}, {}, {}, {}
for j = 0, total - 1 do
  parents[j] = parents[j] or {}
  children[j] = {}
  indegree[j] = indegree[j] or 0
end
for j = 0, total - 1 do
  local t = t_mget(wf, dec(j), 'status', 'children')
  status[j] = t[1]
  for c in sgmatch(t[2] or '', '[^,]+') do
    local ci = tonum(c)
    if ci and ci >= 0 and ci < total then
      table.insert(parents[ci], j)
      table.insert(children[j], ci)
      indegree[ci] = indegree[ci] + 1
    end
  end
end
status[idx] = 'ready'
local order, head = {}, 1
for j = 0, total - 1 do
  if indegree[j] == 0 then order[#order + 1] = j end
end
while head <= #order do
  local j = order[head]
  head = head + 1
  for _, c in ipairs(children[j]) do
    indegree[c] = indegree[c] - 1
    if indegree[c] == 0 then order[#order + 1] = c end
  end
end

local CLOSED = { failed = true, skipped = true, cancelled = true }
local reopened, skipped_n, cancelled_n = 0, 0, 0
for _, j in ipairs(order) do
  local s = status[j]
  if s == 'skipped' or s == 'cancelled' then
    local ok, pending = true, 0
    for _, p in ipairs(parents[j]) do
      if CLOSED[status[p]] or not status[p] then ok = false; break end
      if status[p] ~= 'completed' then pending = pending + 1 end
    end
    if ok then
      local cj = dec(j)
      t_del(wf, cj, 'finished_ms', 'started_ms', 'retry_ms', 'reason')
      t_set(wf, cj, 'pending', dec(pending))
      if pending == 0 then
        make_ready(wf, cj, now, maxlen)
        status[j] = 'ready'
      else
        local name = t_get(wf, cj, 'name')
        t_set(wf, cj, 'status', 'waiting', 'entry', '')
        emit(wf, maxlen, now, 'task', name, j, 'waiting', nil)
        status[j] = 'waiting'
      end
      if s == 'skipped' then skipped_n = skipped_n + 1 else cancelled_n = cancelled_n + 1 end
      reopened = reopened + 1
    end
  end
end
if skipped_n > 0 then rcall('HINCRBY', wk, 'skipped', -skipped_n) end
if cancelled_n > 0 then rcall('HINCRBY', wk, 'cancelled', -cancelled_n) end
rcall('HINCRBY', wk, 'open', opened + reopened)

rcall('XDEL', dead, id)
return { CODE.OK, wf, idx, reopened, was_ended }
