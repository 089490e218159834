-- cancel.lua — cancel a running workflow.
--
-- Every task that has not finished (waiting, ready, retrying, running) becomes cancelled:
-- delayed retries are removed from {ns}:delayed, ready entries are deleted from their
-- streams. A running task's entry stays pending for its worker, whose later
-- complete/fail acknowledges it (and returns Cancelled); begin refuses it. The workflow
-- becomes cancelled (finished_ms, event) and every key gets the retention TTL.
--
-- KEYS[1]  {ns}:wf:<wf>
-- ARGV[1]  key prefix "{ns}:"   (task hashes of the earlier layout, streams, {ns}:delayed
--                               built with keys.rs patterns)
-- ARGV[2]  now (ms)
-- ARGV[3]  events stream MAXLEN
-- ARGV[4]  workflow id
--
-- Returns a code of lib.lua's CODE:
--   CODE.OK (1)                the workflow was running and is now cancelled
--   CODE.ALREADY_FINISHED (13) it had already ended (completed, failed or cancelled); unchanged
--   CODE.NOT_FOUND (6)         no such workflow (never existed or expired)

local wk = KEYS[1]
local now, maxlen, wf = ARGV[2], ARGV[3], ARGV[4]

local w = rcall('HMGET', wk, 'status', 'total')
if not w[1] then return CODE.NOT_FOUND end
if w[1] ~= 'running' then return CODE.ALREADY_FINISHED end

local n = 0
for k = 0, (tonum(w[2]) or 0) - 1 do
  local i = dec(k)
  local s = t_get(wf, i, 'status')
  if s and not TERMINAL[s] then
    close_task(wf, i, s, 'cancelled', now, maxlen, 'the workflow was cancelled')
    n = n + 1
  end
end
if n > 0 then
  rcall('HINCRBY', wk, 'cancelled', n)
  rcall('HINCRBY', wk, 'open', -n)
end
finish(wf, 'cancelled', now, maxlen)
return CODE.OK
