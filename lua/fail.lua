-- fail.lua — a task attempt failed: schedule a retry or fail the task for good.
--
-- Fenced exactly like complete.lua (stale and duplicate calls change nothing). The task may
-- be running, or still ready when a reclaimer dead-letters a poison entry without running it.
--
-- Retry (ARGV[7] given, attempts after this one < max_attempts, workflow running): status
-- retrying, attempts + 1, the error kept, "<wf>|<i>" added to {ns}:delayed at the due time;
-- the entry is acknowledged (the promoter queues a new one when due).
--
-- Deferral (ARGV[14] = "1", ARGV[7] given, workflow running): the attempt never reached
-- the work (no endpoint could take the call, no service instance was live), so it is
-- re-queued like a retry but without using an attempt: status retrying, attempts unchanged,
-- deferrals + 1, the reason kept in error, "<wf>|<i>" added to {ns}:delayed. Waiting for
-- capacity is backpressure, not failure: deferrals use no attempt, however many there are.
-- Their time is bounded instead: the task's `waiting_since` marks the first deferral
-- after the last real attempt, and a deferral at or past `waiting_since` + ARGV[15] fails
-- the task terminally with the error ARGV[16] and an "exhausted" dead letter (attempts
-- unchanged: the task was never tried). A real attempt's failure clears `waiting_since`.
-- A deferral's due time is capped at `waiting_since` + ARGV[15]: a long wait the caller
-- asked for (an endpoint held for longer than the task may wait) ends with one last try at
-- the limit, not after it.
--
-- Terminal: status failed, attempts + 1, error; counters; optionally a dead letter on
-- {ns}:dead (ARGV[8], or "exhausted" when a retry was asked for past max_attempts). Then,
-- if the workflow is running, the failure policy (the task's on_failure, else the
-- workflow's): fail_fast cancels every task that has not started and fails the workflow
-- now; continue skips every unfinished descendant and the workflow ends (failed) when its
-- last open task ends. Under a workflow that already ended only the task is recorded.
--
-- KEYS[1]  {ns}:wf:<wf> (which holds the task's fields; a workflow written in the earliest
--          layout has a hash per task, built from ARGV[1]: lib.lua, "Task fields")
-- KEYS[2]  the stream the entry was read from
-- ARGV[1]  key prefix "{ns}:"   (task hashes of the earlier layout, streams, {ns}:delayed
--                               and {ns}:dead are built with keys.rs patterns)
-- ARGV[2]  consumer group
-- ARGV[3]  entry id
-- ARGV[4]  consumer name
-- ARGV[5]  delivery count of this delivery
-- ARGV[6]  error (JSON text, opaque)
-- ARGV[7]  retry due time (ms), or "" for a terminal failure
-- ARGV[8]  dead-letter kind ("exhausted" | "poison"), or "" for none
-- ARGV[9]  now (ms)
-- ARGV[10] events stream MAXLEN
-- ARGV[11] workflow id
-- ARGV[12] task index
-- ARGV[13] dead-letter stream MAXLEN (approximate)
-- ARGV[14] "1" when the attempt never reached the work (a deferral, see above), else ""
-- ARGV[15] for a deferral: the wait limit (ms), or "" for none
-- ARGV[16] for a deferral: the error (JSON text) recorded when the wait limit has passed
--
-- Returns a code of lib.lua's CODE:
--   CODE.RETRY_SCHEDULED (7)  in {ns}:delayed until the due time (also a deferral)
--   CODE.FAILED (8)           the task failed terminally (policy applied when the workflow ran)
--   CODE.STALE (2)            not this consumer's delivery; nothing changed
--   CODE.DUPLICATE (3)        the task is already terminal; nothing changed
--   CODE.CANCELLED (4)        the task was cancelled while running; the error is kept, entry
--                             acked
--   CODE.NOT_RUNNING (5)      the entry is ours but the task is neither ready nor running
--   CODE.NOT_FOUND (6)        the task no longer exists (expired); the entry is acknowledged
-- When this call ended the workflow (fail_fast, or the last open task under continue), the
-- reply is the array {CODE.FAILED (8), "failed", duration ms (finished_ms - created_ms)}
-- instead, as complete.lua's.

local wk, stream = KEYS[1], KEYS[2]
local group, entry, consumer, deliveries = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local err, retry_at, dead_kind, now = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local maxlen, wf, i, dead_maxlen = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local deferred = ARGV[14] == '1'

local own = owner(stream, group, entry, consumer, deliveries)
if own == 'other' then return CODE.STALE end

local t = t_mget(wf, i, 'status', 'attempts', 'max_attempts', 'name', 'cap', 'on_failure',
  'entry')
local status = t[1]
if own == 'gone' then
  if status and TERMINAL[status] then return CODE.DUPLICATE end
  return CODE.STALE
end

if not status or rcall('EXISTS', wk) == 0 then
  ack_entry(stream, group, entry)
  return CODE.NOT_FOUND
end
if status == 'cancelled' then
  t_set(wf, i, 'error', err)
  ack_entry(stream, group, entry)
  return CODE.CANCELLED
end
if TERMINAL[status] then
  ack_entry(stream, group, entry)
  return CODE.DUPLICATE
end
if status ~= 'running' and status ~= 'ready' then return CODE.NOT_RUNNING end
if t[7] ~= entry then return CODE.STALE end

local w = rcall('HMGET', wk, 'status', 'policy')
ack_entry(stream, group, entry)

local gave_up = false
if deferred and retry_at ~= '' and w[1] == 'running' then
  local limit = tonum(ARGV[15])
  local since = tonum(t_get(wf, i, 'waiting_since'))
  if limit and since and tonum(now) - since >= limit then
    -- Waited as long as the task may: it fails below, without counting an attempt.
    gave_up = true
    if ARGV[16] ~= '' then err = ARGV[16] end
    retry_at = ''
    dead_kind = 'exhausted'
  else
    t_incr(wf, i, 'deferrals', '1')
    if not since then t_set(wf, i, 'waiting_since', now) end
    if limit then
      local cap = (since or tonum(now)) + limit
      if tonum(retry_at) > cap then retry_at = string.format('%d', cap) end
    end
    t_set(wf, i, 'status', 'retrying', 'error', err, 'retry_ms', retry_at, 'entry', '')
    rcall('ZADD', DELAYED, retry_at, wf .. '|' .. i)
    emit(wf, maxlen, now, 'task', t[4], i, 'retrying', tonum(t[2]) or 0, true)
    return CODE.RETRY_SCHEDULED
  end
end

local attempts = tonum(t[2]) or 0
if not gave_up then attempts = attempts + 1 end
local max_attempts = tonum(t[3]) or 1

if retry_at ~= '' and attempts < max_attempts and w[1] == 'running' then
  -- A real attempt: the next wait for capacity starts its own clock.
  t_del(wf, i, 'waiting_since')
  t_set(wf, i, 'status', 'retrying', 'attempts', dec(attempts), 'error', err,
    'retry_ms', retry_at, 'entry', '')
  rcall('ZADD', DELAYED, retry_at, wf .. '|' .. i)
  emit(wf, maxlen, now, 'task', t[4], i, 'retrying', attempts)
  return CODE.RETRY_SCHEDULED
end

if dead_kind == '' and retry_at ~= '' and attempts >= max_attempts then
  -- The caller asked for a retry the task has no attempts left for.
  dead_kind = 'exhausted'
end
t_set(wf, i, 'status', 'failed', 'attempts', dec(attempts), 'error', err,
  'finished_ms', now, 'entry', '')
emit(wf, maxlen, now, 'task', t[4], i, 'failed', attempts)
if dead_kind ~= '' then
  rcall('XADD', DEAD, 'MAXLEN', '~', dead_maxlen, '*',
    'wf', wf, 'task', i, 'name', t[4], 'cap', t[5], 'kind', dead_kind,
    'reason', err, 'attempts', attempts, 'at_ms', now)
end

rcall('HINCRBY', wk, 'failed', '1')
rcall('HINCRBY', wk, 'open', '-1')
if w[1] == 'running' then
  local policy = t[6]
  if not policy or policy == '' then policy = w[2] end
  if policy == 'continue' then
    skip_descendants(wf, i, now, maxlen)
  else
    fail_fast(wf, t[4], now, maxlen)
  end
end
return with_end(CODE.FAILED)
