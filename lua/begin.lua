-- begin.lua — a worker starts (or, after a reclaim, restarts) a delivered task.
--
-- Fenced: the entry must be pending for this consumer with this delivery count, otherwise
-- nothing changes (another consumer reclaimed it). A runnable task (ready or running, the
-- entry is the task's current entry, the workflow is running) becomes running and its spec,
-- attempts, the workflow input and the results of the tasks it references are returned.
-- An entry whose task can no longer run is acknowledged and deleted; a task that had
-- started under a workflow that has since failed is cancelled (counted) rather than re-run.
--
-- KEYS[1]  {ns}:wf:<wf>:t:<i>
-- KEYS[2]  {ns}:wf:<wf>
-- KEYS[3]  the stream the entry was read from
-- ARGV[1]  key prefix "{ns}:"   (referenced task hashes are built with keys.rs patterns)
-- ARGV[2]  consumer group
-- ARGV[3]  entry id
-- ARGV[4]  consumer name
-- ARGV[5]  delivery count of this delivery
-- ARGV[6]  now (ms)
-- ARGV[7]  events stream MAXLEN
-- ARGV[8]  workflow id
-- ARGV[9]  task index
--
-- Returns an array whose first element is a code of lib.lua's CODE:
--   {CODE.OK (1), name, spec, attempts, max_attempts, input, ready_ms, deferrals,
--    ref name 1, ref result 1, ...}  the task runs
--        (attempts = failed attempts so far; ready_ms = when the task last became ready,
--        "" if unknown; deferrals = re-queues that used no attempt; a reference without a
--        result is nil)
--   {CODE.NOT_RUNNABLE (9), status}  entry acked and deleted; status is the task's status,
--        or "missing" (task expired/unknown) or "superseded" (not the current entry)
--   {CODE.STALE (2)}  the entry is not pending for this consumer and delivery

local tk, wk, stream = KEYS[1], KEYS[2], KEYS[3]
local group, entry, consumer, deliveries = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, maxlen, wf, i = ARGV[6], ARGV[7], ARGV[8], ARGV[9]

if owner(stream, group, entry, consumer, deliveries) ~= 'ours' then
  return { CODE.STALE }
end

local t = redis.call('HMGET', tk, 'status', 'entry', 'spec', 'attempts', 'max_attempts', 'refs', 'name',
  'ready_ms', 'deferrals')
local status = t[1]
if not status then
  ack_del(stream, group, entry)
  return { CODE.NOT_RUNNABLE, 'missing' }
end
if status ~= 'ready' and status ~= 'running' then
  ack_del(stream, group, entry)
  return { CODE.NOT_RUNNABLE, status }
end
if t[2] ~= entry then
  ack_del(stream, group, entry)
  return { CODE.NOT_RUNNABLE, 'superseded' }
end

local w = redis.call('HMGET', wk, 'status', 'input')
if not w[1] then
  ack_del(stream, group, entry)
  return { CODE.NOT_RUNNABLE, 'missing' }
end
if w[1] ~= 'running' then
  -- The workflow ended (failed under fail_fast) while this task was queued or running:
  -- it does not run again; it is closed as cancelled so the counters stay exact.
  ack_del(stream, group, entry)
  redis.call('HSET', tk, 'status', 'cancelled', 'finished_ms', now,
    'reason', 'the workflow had ended before the task was taken up again')
  redis.call('HINCRBY', wk, 'cancelled', 1)
  redis.call('HINCRBY', wk, 'open', -1)
  emit(wf, maxlen, now, 'task', t[7], i, 'cancelled', nil)
  return { CODE.NOT_RUNNABLE, 'cancelled' }
end

local attempts = tonumber(t[4]) or 0
redis.call('HSET', tk, 'status', 'running', 'started_ms', now, 'consumer', consumer)
emit(wf, maxlen, now, 'task', t[7], i, 'running', attempts + 1)

local out = { CODE.OK, t[7], t[3], attempts, tonumber(t[5]) or 1, w[2], t[8] or '',
  tonumber(t[9]) or 0 }
for r in string.gmatch(t[6] or '', '[^,]+') do
  local rr = redis.call('HMGET', task_key(wf, r), 'name', 'result')
  out[#out + 1] = rr[1] or ''
  out[#out + 1] = rr[2]
end
return out
