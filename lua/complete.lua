-- complete.lua — record a task's result once and release its ready dependents.
--
-- Fenced: the delivery must be the one the task hash names — its current `entry`, and the
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
-- KEYS[1]  {ns}:wf:<wf>:t:<i>
-- KEYS[2]  {ns}:wf:<wf>
-- KEYS[3]  the stream the entry was read from
-- ARGV[1]  key prefix "{ns}:"   (child task hashes and streams are built with keys.rs patterns)
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

local tk, wk, stream = KEYS[1], KEYS[2], KEYS[3]
local group, entry, consumer, deliveries = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local result, now, maxlen, wf, i = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]

local t = rcall('HMGET', tk, 'status', 'children', 'name', 'attempts', 'entry',
  'consumer', 'delivery')
local status = t[1]
if not status then
  ack_entry(stream, group, entry)
  return CODE.NOT_FOUND
end
-- This delivery started the task's current entry, and nobody took it over since.
-- (`delivery` is compared as text: it was written from the same decimal counts.)
local ours = t[5] == entry and t[6] == consumer and t[7] == deliveries
if not ours then
  if TERMINAL[status] then return CODE.DUPLICATE end
  if t[5] == entry and status ~= 'running' then return CODE.NOT_RUNNING end
  return CODE.STALE
end

-- The workflow's status, read once: nil when the workflow expired.
local wstatus = rcall('HGET', wk, 'status')
if not wstatus then
  ack_entry(stream, group, entry)
  return CODE.NOT_FOUND
end
if status == 'cancelled' then
  rcall('HSET', tk, 'result', result)
  ack_entry(stream, group, entry)
  return CODE.CANCELLED
end
if TERMINAL[status] then
  ack_entry(stream, group, entry)
  return CODE.DUPLICATE
end
if status ~= 'running' then return CODE.NOT_RUNNING end

local attempts = tonum(t[4]) or 0
rcall('HSET', tk, 'status', 'completed', 'result', result, 'finished_ms', now)
emit(wf, maxlen, now, 'task', t[3], i, 'completed', dec(attempts + 1))
ack_entry(stream, group, entry)

rcall('HINCRBY', wk, 'completed', '1')
local open = rcall('HINCRBY', wk, 'open', '-1')
if wstatus == 'running' then
  release(wf, t[2], now, maxlen)
  finish_if_done(wf, open, now, maxlen)
end
return with_end(CODE.OK)
