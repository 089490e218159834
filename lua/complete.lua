-- complete.lua — record a task's result once and release its ready dependents.
--
-- Fenced: the delivery must be the one the task's state names — its current `entry`, and the
-- `consumer` and `delivery` (count) that begin.lua/read.lua recorded when it started. This
-- is as strong as asking the pending list (XPENDING) and costs no command: every change of
-- an entry's owner or delivery count goes through a script that records it in the same
-- step (read.lua and begin.lua at the start, reclaim.lua when it takes an entry over;
-- heartbeat.lua's XCLAIM JUSTID changes neither). A stale completion (the entry was
-- reclaimed by another consumer or delivery, or the task moved on to another entry) or a
-- duplicate one (the task is already terminal) changes nothing.
-- Otherwise, atomically: the result is recorded (status completed), each child's `pending`
-- drops by one and every child reaching 0 while waiting is queued on its stream exactly
-- once, the entry is acknowledged (trim.lua removes it from the stream later), and the
-- workflow ends when its last open task ends (failed if any task failed, else completed),
-- getting the retention TTL.
-- Under a workflow that already ended (failed under fail_fast) a late completion records
-- the result and the counters but releases nothing.
--
-- KEYS[1]  {ns}:wf:<wf> (which holds the task's fields; a workflow written in the earliest
--          layout has a hash per task, built from ARGV[1]: lib.lua, "Task fields")
-- KEYS[2]  the stream the entry was read from
-- ARGV[1]  key prefix "{ns}:"   (streams and, for a workflow of the earlier layout, child task
--                               hashes are built with keys.rs patterns)
-- ARGV[2]  consumer group
-- ARGV[3]  entry id
-- ARGV[4]  consumer name
-- ARGV[5]  delivery count of this delivery
-- ARGV[6]  result (JSON text, opaque)
-- ARGV[7]  now (ms)
-- ARGV[8]  events stream MAXLEN
-- ARGV[9]  workflow id
-- ARGV[10] task index
--
-- Returns a code of lib.lua's CODE:
--   CODE.OK (1)           recorded; dependents released (when the workflow is running)
--   CODE.STALE (2)        the task runs under another consumer or delivery, or it has moved
--                         on to another entry; nothing changed
--   CODE.DUPLICATE (3)    the task is already terminal; nothing changed (the entry, if it
--                         is this delivery's, is acknowledged)
--   CODE.CANCELLED (4)    the task was cancelled while this delivery ran it; the result is
--                         kept for inspection, the status stays cancelled, the entry is
--                         acknowledged
--   CODE.NOT_RUNNING (5)  the entry is the task's current one but the task was never begun;
--                         nothing changed
--   CODE.NOT_FOUND (6)    the task no longer exists (expired); the entry is acknowledged
-- When this call ended the workflow (its last open task), the reply is the array
-- {CODE.OK (1), final status, duration ms (finished_ms - created_ms)} instead: a workflow ends
-- in exactly one call, so the worker records its duration once, without another read.

local wk, stream = KEYS[1], KEYS[2]
local group, entry, consumer, deliveries = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local result, now, maxlen, wf, i = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]

-- The workflow's fields and, in the packed layout (lib.lua, "Task fields"), the task's
-- state and children: one command. A workflow of the fields layout has the children and the
-- name in fields of their own, one of the earliest layout its task in a hash of its own.
local N = names(i)
local w = rcall('HMGET', wk, 'status', 'layout', 'open', 'completed', N.s, N.k, 'watch')
local in_hash, packed = note_layout(wf, w[2])
-- The state's runs (lib.lua's CPAT): what the fence compares, and what the completed state
-- keeps (`run`, pending to started_ms).
local status, run, tentry, tconsumer, tdelivery, tattempts
local children, tname
if in_hash then
  if w[5] then
    status, run, tentry, tconsumer, tdelivery = smatch(w[5], CPAT)
  end
  if packed then
    note_watch(wf, w[7])
    children = w[6]
  else
    local t = rcall('HMGET', wk, N.children, N.name)
    children, tname = t[1], t[2]
  end
else
  local t = rcall('HMGET', task_key(wf, i), 'status', 'children', 'name', 'attempts', 'entry',
    'consumer', 'delivery')
  status, children, tname, tattempts = t[1], t[2], t[3], t[4]
  tentry, tconsumer, tdelivery = t[5], t[6], t[7]
end
if not status then
  ack_entry(stream, group, entry)
  return CODE.NOT_FOUND
end
-- This delivery started the task's current entry, and nobody took it over since.
-- (`delivery` is compared as text: it was written from the same decimal counts.)
local ours = tentry == entry and tconsumer == consumer and tdelivery == deliveries
if not ours then
  if TERMINAL[status] then return CODE.DUPLICATE end
  if tentry == entry and status ~= 'running' then return CODE.NOT_RUNNING end
  return CODE.STALE
end

-- The workflow's status: false when the workflow expired.
local wstatus = w[1]
if not wstatus then
  ack_entry(stream, group, entry)
  return CODE.NOT_FOUND
end
if status == 'cancelled' then
  t_set(wf, i, 'result', result)
  ack_entry(stream, group, entry)
  return CODE.CANCELLED
end
if TERMINAL[status] then
  ack_entry(stream, group, entry)
  return CODE.DUPLICATE
end
if status ~= 'running' then return CODE.NOT_RUNNING end

-- The counters are written with the task's fields (and, in the packed and fields layouts,
-- the released children's) in one HSET: the script runs alone, so reading and writing them
-- is as exact as HINCRBY.
local open = (num(w[3]) or 0) - 1
local done = (num(w[4]) or 0) + 1
local h = { 'completed', dec(done), 'open', dec(open) }
if in_hash then
  h[5] = N.s; h[6] = 'completed' .. run .. now
  h[7] = N.result; h[8] = result
else
  rcall('HSET', task_key(wf, i), 'status', 'completed', 'result', result, 'finished_ms', now)
end
if watched(wf) then
  -- (A packed task's name and the attempts only for a watcher's event.)
  if packed then tname = t_get(wf, i, 'name') end
  if in_hash then tattempts = smatch(run, APAT) end
  emit(wf, maxlen, now, 'task', tname, i, 'completed', dec((num(tattempts) or 0) + 1))
end
ack_entry(stream, group, entry)

if wstatus == 'running' then
  if in_hash then
    release_in_hash(wf, wk, children, packed, now, maxlen, h)
  else
    release(wf, children, now, maxlen)
  end
end
call_many('HSET', wk, h)
if wstatus == 'running' then
  finish_if_done(wf, open, now, maxlen)
end
return with_end(CODE.OK)
