-- watch.lua — ask for every transition of a workflow as an event, for a while.
--
-- The watch key is created with the lease's expiry, or its expiry lengthened (a key set at
-- submission, which has no expiry, stays as it is: PEXPIRE GT treats no expiry as
-- infinite). The workflow hash gets its `watch` field in the same step: the scripts ask
-- for the key only of a workflow that has the field (lib.lua's note_watch), so the field
-- must be there before the watcher reads the workflow's state. It is only set on a
-- workflow that exists, so a watch of an unknown or expired id creates no hash (its key
-- expires on its own).
--
-- KEYS[1]  {ns}:wf:<wf>
-- KEYS[2]  {ns}:wf:<wf>:watch
-- ARGV[1]  key prefix "{ns}:" (unused here; every script receives it first)
-- ARGV[2]  the lease in ms (> 0)
--
-- Returns a code of lib.lua's CODE:
--   CODE.OK (1)         the workflow is watched
--   CODE.NOT_FOUND (6)  no such workflow; only the expiring key was set

local wk, key, ms = KEYS[1], KEYS[2], ARGV[2]
rcall('SET', key, '1', 'NX', 'PX', ms)
rcall('PEXPIRE', key, ms, 'GT')
if rcall('EXISTS', wk) == 0 then return CODE.NOT_FOUND end
rcall('HSET', wk, 'watch', '1')
return CODE.OK
