-- begin.lua — a worker starts (or, after a reclaim, restarts) a delivered task.
--
-- Fenced: the entry must be pending for this consumer with this delivery count, otherwise
-- nothing changes (another consumer reclaimed it). Then lib.lua's begin_entry: a runnable
-- task (ready or running, the entry is the task's current entry, the workflow is running)
-- becomes running and its spec, attempts, the workflow input and the results of the tasks
-- it references are returned. An entry whose task can no longer run is acknowledged and
-- deleted; a task that had started under a workflow that has since failed is cancelled
-- (counted) rather than re-run. Fresh entries are begun by read.lua as it delivers them;
-- this script begins the entries a consumer reclaimed.
--
-- KEYS[1]  {ns}:wf:<wf>:t:<i>, the task's hash if the workflow was written in the earlier
--          layout (lib.lua, "Task fields"; the packed and fields layouts keep it in KEYS[2])
-- KEYS[2]  {ns}:wf:<wf>
-- KEYS[3]  the stream the entry was read from
-- ARGV[1]  key prefix "{ns}:"   (the workflow hash and, for a workflow of the earlier
--                               layout, task hashes are built with keys.rs patterns)
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
--   {CODE.OK (1), name, spec, attempts, max_attempts, input, ready_ms, deferrals, below,
--    ref name 1, ref result 1, ...}  the task runs
--        (attempts = failed attempts so far; ready_ms = when the task last became ready,
--        "" if unknown; deferrals = re-queues that used no attempt; below = the longest
--        chain of tasks waiting on it, 0 if unrecorded; a reference without a result is nil)
--   {CODE.NOT_RUNNABLE (9), status}  entry acknowledged; status is the task's status,
--        or "missing" (task expired/unknown) or "superseded" (not the current entry)
--   {CODE.STALE (2)}  the entry is not pending for this consumer and delivery

local stream = KEYS[3]
local group, entry, consumer, deliveries = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, maxlen, wf, i = ARGV[6], ARGV[7], ARGV[8], ARGV[9]

if owner(stream, group, entry, consumer, deliveries) ~= 'ours' then
  return { CODE.STALE }
end
return begin_entry(stream, group, entry, consumer, now, maxlen, wf, i, deliveries)
