-- submit.lua — write a whole workflow atomically and release its root tasks.
--
-- Idempotency: with a key, "{ns}:idem:<key>" holds "<wf>\n<digest>". The same key with the
-- same digest returns the existing workflow; with another digest the submission is refused.
-- A workflow id that already exists is refused too. Nothing is written on any refusal: all
-- checks run before the first write (a Lua error does not roll back earlier writes).
--
-- Writes: the workflow hash (status running, open = total, counters 0) and every task's
-- fields (status ready for roots, waiting otherwise; pending = number of dependencies) in
-- the layout ARGV[14] names (lib.lua, "Task fields"): fields of the workflow hash, packed
-- ("packed", this version's) or one per task field ("fields": the submitter saw a worker of
-- the version before live), or one hash per task ("": a worker of an earlier version), the
-- consumer group (created at id 0 with MKSTREAM, so no entry added before it is lost) on
-- every stream the workflow's tasks use, each capability into {ns}:caps, one stream entry
-- {wf, t} per root task, the {ns}:workflows index, the idempotency key, the
-- "submitted" event, the fleet-wide counter workflows_submitted in {ns}:stats, and, when
-- asked, the watch key (every transition of the workflow becomes an event; lib.lua's emit)
-- with, in the packed layout, the workflow's `watch` field (lib.lua's note_watch).
--
-- KEYS[1]  {ns}:wf:<wf>   (other keys are built from ARGV[1] with the patterns of keys.rs)
-- ARGV[1]  key prefix "{ns}:"
-- ARGV[2]  consumer group name
-- ARGV[3]  workflow id
-- ARGV[4]  workflow name
-- ARGV[5]  idempotency key, or "" for none
-- ARGV[6]  digest of the workflow body
-- ARGV[7]  failure policy: "fail_fast" | "continue"
-- ARGV[8]  workflow input (JSON text, opaque)
-- ARGV[9]  now (ms since the epoch)
-- ARGV[10] retention in seconds (TTL given to every key when the workflow ends)
-- ARGV[11] events stream MAXLEN (approximate)
-- ARGV[12] number of tasks N (decimal text)
-- ARGV[13] "1": watched from the start ({ns}:wf:<wf>:watch is set; it expires with the
--          workflow's other keys); "": only task ends and workflow events
-- ARGV[14] the layout of the tasks' fields (lib.lua, "Task fields"): "packed", "fields" or ""
--          (task hashes)
-- ARGV[15..] the tasks in task index order. In the packed layout 5 arguments each: the packed
--          definition and the packed children ("" for none; keys.rs's pack_definition and
--          pack_children), the number of dependencies, capability, priority. In the other
--          layouts 10 arguments each: name, capability,
--          priority ("high"|"normal"|"low"), spec JSON text, number of dependencies,
--          children "i,j,...", referenced tasks "i,j,...", max attempts, on_failure policy
--          or "", the longest chain of tasks waiting on it (placement favours the critical
--          path). Counts are decimal text, written to the task's fields as they come (lib.lua's
--          dec()). Flat arguments, not a JSON document: decoding JSON in the script cost
--          about 4 % of Redis's instructions per task, and a JSON spec inside JSON is
--          unescaped character by character.
--
-- Returns {code, workflow id}, code one of lib.lua's CODE:
--   CODE.OK (1)          written; the id is ARGV[3]
--   CODE.EXISTING (10)   same idempotency key and digest; the id of the existing workflow
--   CODE.CONFLICT (11)   same idempotency key, another digest; the id of the existing workflow
--   CODE.ID_EXISTS (12)  a workflow with id ARGV[3] already exists

local wk = KEYS[1]
local group, wf, name, idem, digest = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local policy, input, now, retention, maxlen = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]

if idem ~= '' then
  local v = rcall('GET', idem_key(idem))
  if v then
    local owf, odigest = smatch(v, '^(.-)\n(.*)$')
    if odigest == digest then return { CODE.EXISTING, owf } end
    return { CODE.CONFLICT, owf or v }
  end
end
if rcall('EXISTS', wk) == 1 then return { CODE.ID_EXISTS, wf } end

local layout = ARGV[14]
local packed = layout == PACKED_LAYOUT
local in_hash = packed or layout == FIELDS_LAYOUT
if not in_hash and layout ~= '' then
  return redis.error_reply('submit: unknown task layout "' .. layout .. '"')
end
-- Arguments per task, and where capability and priority are among them.
local FIELDS, CAP = 10, 2
if packed then FIELDS, CAP = 5, 4 end
local total = ARGV[12]
local n = tonum(total)
local FIRST = 14
if not n or #ARGV ~= FIRST + n * FIELDS then
  return redis.error_reply('submit: ' .. (#ARGV - FIRST) .. ' task arguments for ' .. total ..
    ' tasks of ' .. FIELDS)
end

-- Groups first: creating a group is idempotent and harmless, and an unexpected error here
-- (a key of the wrong type) aborts before the workflow is half written. Only a stream that
-- does not exist yet is created with its group here: asking again for every workflow made
-- a BUSYGROUP error reply each time, dear to make and to catch. (A stream that exists
-- without the group, made by a release after `prune`, gets it from its first reader:
-- read.lua creates it at id 0 on NOGROUP, so nothing queued before is lost.)
local streams = {}
for k = 0, n - 1 do
  local a = FIRST + k * FIELDS
  local cap, prio = ARGV[a + CAP], ARGV[a + CAP + 1]
  local s = stream_key(cap, prio)
  if not streams[s] then
    streams[s] = true
    if rcall('EXISTS', s) == 0 then
      local r = rpcall('XGROUP', 'CREATE', s, group, '0', 'MKSTREAM')
      if type(r) == 'table' and r.err and not sfind(r.err, 'BUSYGROUP', 1, true) then
        return redis.error_reply(r.err)
      end
    end
    rcall('SADD', CAPS, cap)
  end
end

-- The workflow's own fields first, then, in the packed and fields layouts, every task's: one
-- HSET (more only for workflows whose fields outnumber what one Lua call can pass, lib.lua's
-- call_many). In the earliest layout each task's fields go to its own hash.
local h = {
  'status', 'running', 'open', total, 'completed', '0', 'input', input,
  'failed', '0', 'retention', retention, 'total', total, 'idem', idem, 'created_ms', now,
  'id', wf, 'name', name, 'policy', policy, 'skipped', '0', 'cancelled', '0',
  'digest', digest }
if in_hash then
  h[#h + 1] = 'layout'; h[#h + 1] = layout
end
-- Whoever creates the watch key marks the workflow watched (lib.lua's note_watch).
if packed and ARGV[13] == '1' then
  h[#h + 1] = 'watch'; h[#h + 1] = '1'
end
for k = 0, n - 1 do
  local a = FIRST + k * FIELDS
  local i = dec(k)
  local cap, prio = ARGV[a + CAP], ARGV[a + CAP + 1]
  local deps = packed and ARGV[a + 3] or ARGV[a + 5]
  local root = deps == '0'
  local entry = root and rcall('XADD', stream_key(cap, prio), '*', 'wf', wf, 't', i)
  if in_hash then
    -- Appended in place, not through a helper: a call per field is most of what a
    -- submission costs Lua. The state is one field (lib.lua, "Task fields").
    local N, m = names(i), #h
    h[m + 1] = N.s
    if root then
      h[m + 2] = state('ready', '0', '0', entry, '', '', now, '', '')
    else
      h[m + 2] = state('waiting', deps, '0', '', '', '', '', '', '')
    end
    h[m + 3] = N.cap; h[m + 4] = cap
    h[m + 5] = N.prio; h[m + 6] = prio
    if packed then
      h[m + 7] = N.d; h[m + 8] = ARGV[a + 1]
      if ARGV[a + 2] ~= '' then
        h[m + 9] = N.k; h[m + 10] = ARGV[a + 2]
      end
    else
      h[m + 7] = N.name; h[m + 8] = ARGV[a + 1]
      h[m + 9] = N.spec; h[m + 10] = ARGV[a + 4]
      h[m + 11] = N.children; h[m + 12] = ARGV[a + 6]
      h[m + 13] = N.refs; h[m + 14] = ARGV[a + 7]
      h[m + 15] = N.max_attempts; h[m + 16] = ARGV[a + 8]
      h[m + 17] = N.on_failure; h[m + 18] = ARGV[a + 9]
      h[m + 19] = N.below; h[m + 20] = ARGV[a + 10]
    end
  else
    local t = { 'name', ARGV[a + 1], 'cap', cap, 'prio', prio, 'spec', ARGV[a + 4],
      'status', root and 'ready' or 'waiting', 'pending', deps,
      'children', ARGV[a + 6], 'refs', ARGV[a + 7], 'max_attempts', ARGV[a + 8],
      'attempts', '0', 'on_failure', ARGV[a + 9], 'below', ARGV[a + 10] }
    if root then
      t[#t + 1] = 'ready_ms'; t[#t + 1] = now; t[#t + 1] = 'entry'; t[#t + 1] = entry
    end
    rcall('HSET', task_key(wf, i), unpack(t))
  end
end
call_many('HSET', wk, h)

rcall('ZADD', WORKFLOWS, now, wf)
rcall('HINCRBY', STATS, 'workflows_submitted', '1')
if idem ~= '' then
  rcall('SET', idem_key(idem), wf .. '\n' .. digest)
end
if ARGV[13] == '1' then
  rcall('SET', watch_key(wf), '1')
end
emit(wf, maxlen, now, 'workflow', nil, nil, 'submitted', nil)
return { CODE.OK, wf }
