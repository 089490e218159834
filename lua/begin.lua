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
-- KEYS[1]  {ns}:wf:<wf> (which holds the task's fields; a workflow written in the earliest
--          layout has a hash per task, built from ARGV[1]: lib.lua, "Task fields")
-- KEYS[2]  the stream the entry was read from
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
--   {CODE.OK (1), definition, attempts, input, ready_ms, deferrals, ref result 1, ...}
--        the task runs (definition = the task's packed definition, lib.lua's DPART: its
--        references with their names, name, max attempts, below = the longest chain of
--        tasks waiting on it, spec; made up as one for a task of an earlier layout;
--        attempts = failed attempts so far; ready_ms = when the task last became ready, ""
--        if unknown; deferrals = re-queues that used no attempt; then each reference's
--        result in the definition's order, nil for one without a result)
--   {CODE.NOT_RUNNABLE (9), status}  entry acknowledged; status is the task's status,
--        or "missing" (task expired/unknown) or "superseded" (not the current entry)
--   {CODE.STALE (2)}  the entry is not pending for this consumer and delivery

local stream = KEYS[2]
local group, entry, consumer, deliveries = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, maxlen, wf, i = ARGV[6], ARGV[7], ARGV[8], ARGV[9]

if owner(stream, group, entry, consumer, deliveries) ~= 'ours' then
  return { CODE.STALE }
end
return begin_entry(stream, group, entry, consumer, now, maxlen, wf, i, deliveries)
