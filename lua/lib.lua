-- lib.lua — helpers shared by every Gleitzeit script.
--
-- Not a script of its own: crates/gleitzeit-queue/src/scripts.rs builds one Redis function
-- library from this file and every script of lua/ (each script's body becomes one function
-- of the library), so the key patterns and the state transitions that several scripts share
-- (fencing, release, failure policy, workflow end) exist exactly once, and Redis runs this
-- file once when it loads the library rather than on every call.
--
-- Convention: ARGV[1] of every script is the key prefix "{<ns>}:"; each function starts by
-- calling use_prefix(ARGV[1]). Keys the scripts build themselves use exactly the patterns of
-- crates/gleitzeit-queue/src/keys.rs:
--   {ns}:wf:<wf>               workflow hash; also holds every task's fields, as
--                              "<i>.<field>" (i = 0-based task index; see "Task fields")
--   {ns}:wf:<wf>:t:<i>         task hash of a workflow written by an earlier version
--   {ns}:wf:<wf>:events        progress events stream
--   {ns}:wf:<wf>:watch         string: someone follows the workflow's every transition
--   {ns}:idem:<key>            idempotency string "<wf>\n<digest>"
--   {ns}:q:<cap>               ready stream, normal priority
--   {ns}:q:<cap>#high          ready stream, high priority
--   {ns}:q:<cap>#low           ready stream, low priority
--   {ns}:caps                  set of capabilities
--   {ns}:workflows             zset created_ms -> workflow id
--   {ns}:expiring              zset expiry_ms -> workflow id of ended workflows (the
--                              promoter drops them from {ns}:workflows once expired)
--   {ns}:delayed               zset due_ms -> "<wf>|<i>"
--   {ns}:dead                  dead-letter stream
--   {ns}:stats                 hash of fleet-wide workflow counters (metrics)
--   {ns}:endpoints             set of endpoint names
--   {ns}:ep:<endpoint>:leases  zset of an endpoint's slot leases ("<consumer>|<id>" -> expiry)
--   {ns}:ep:<endpoint>:hold    string with a PX expiry: the endpoint is held back until then
--   {ns}:ep:<endpoint>:limit   the endpoint's adapted concurrency limit (a float, expiring)
--   {ns}:ep:<endpoint>:budget  hash of the rate-limit budget the endpoint last reported
-- Every key of a call shares the hash tag of the prefix it was given, so a script never
-- crosses a Cluster slot. In a namespace over several shards that prefix is a shard's
-- ("{<ns>~<k>}:") for the task scripts and an endpoint's ("{<ns>~ep~<endpoint>}:") for the
-- lease scripts, which then name one endpoint per call (keys.rs, Keys::endpoint_prefix).

-- The key prefix of the current call and the fixed keys built from it (use_prefix sets them:
-- one library serves every namespace).
local P, CAPS, WORKFLOWS, EXPIRING, DELAYED, DEAD, STATS, ENDPOINTS
-- Endpoint name -> its hold, limit and budget keys in the current namespace (ep_keys).
local EP_KEYS = {}
-- A packed child's "<capability>\30<priority>" -> {capability, its stream's key} in the
-- current namespace (queue_of).
local QUEUES = {}
-- Per call: workflow id -> whether it is watched (see emit), so a script that emits several
-- events of one workflow asks once (made on first use: most calls never ask).
local WATCHED
-- Per call: {final status, duration ms} of the workflow this call ended (finish sets it), so
-- complete.lua and fail.lua can return it and the worker records the workflow's duration
-- without reading the workflow again. A workflow ends in exactly one call.
local ENDED
-- Per call: the workflow whose layout the call last read, whether its tasks live in the
-- workflow hash, and whether their definitions are packed (see "Task fields"). One slot, not
-- a table per call: nearly every call touches one workflow, and a miss only reads the layout
-- again.
local LAYOUT_WF, IN_HASH, PACKED

-- redis.call, redis.pcall, tonumber and the string functions the scripts use, as locals of
-- the library: `redis.call(...)` looks up two names in the function's globals on every call
-- (about 26 times per task), a local is one register read; together about 1.9 % of Redis's
-- instructions per task (docs/benchmarks.md, "The eighth round"). Taken on the first call,
-- not while the library loads: Redis offers the full `redis` table (and `tostring`, see
-- dec()) only to a running function. Every function starts with use_prefix.
local rcall, rpcall, tonum, smatch, sgmatch, sfind
local function use_prefix(prefix)
  if not rcall then
    rcall, rpcall, tonum = redis.call, redis.pcall, tonumber
    smatch, sgmatch, sfind = string.match, string.gmatch, string.find
  end
  WATCHED = nil
  ENDED = nil
  LAYOUT_WF = nil
  -- Nearly every call names the namespace of the call before it: its keys are built already
  -- (each `..` hashes and interns a new string, eight per call otherwise).
  if prefix == P then return end
  P = prefix
  EP_KEYS = {}
  QUEUES = {}
  CAPS = P .. 'caps'
  WORKFLOWS = P .. 'workflows'
  EXPIRING = P .. 'expiring'
  DELAYED = P .. 'delayed'
  DEAD = P .. 'dead'
  STATS = P .. 'stats'
  ENDPOINTS = P .. 'endpoints'
end

-- Decimal text of small integers, each made once and kept with the library. Redis 7.0 turns
-- every Lua number passed to redis.call into text with snprintf("%.17g"), and Lua does the
-- same for a number in `..`: a few thousand instructions each, a dozen times per task. So
-- the scripts pass text: ARGV as given, literals quoted, and counts through dec(). (Filled
-- on use: while Redis loads a library, `tostring` is not available.)
local DEC = {}
local function dec(n)
  local s = DEC[n]
  if s then return s end
  s = tostring(n)
  if n >= 0 and n < 4096 then DEC[n] = s end
  return s
end

-- The number a small decimal text stands for, the inverse of dec(): Lua's tonumber goes
-- through strtod, about a thousand instructions, and the hot path reads a handful of counts
-- per task (attempts, the open and completed counters, each child's pending count).
local NUM = {}
local function num(s)
  local n = NUM[s]
  if n then return n end
  n = tonum(s)
  if n and n >= 0 and n < 4096 and n % 1 == 0 then NUM[s] = n end
  return n
end

local function wf_key(wf) return P .. 'wf:' .. wf end
local function task_key(wf, i) return P .. 'wf:' .. wf .. ':t:' .. i end
local function events_key(wf) return P .. 'wf:' .. wf .. ':events' end
local function watch_key(wf) return P .. 'wf:' .. wf .. ':watch' end
local function idem_key(k) return P .. 'idem:' .. k end
local function stream_key(cap, prio)
  if prio == 'high' then return P .. 'q:' .. cap .. '#high' end
  if prio == 'low' then return P .. 'q:' .. cap .. '#low' end
  return P .. 'q:' .. cap
end
-- The capability and the stream key a packed child's "<capability>\30<priority>" names,
-- made once per namespace: a release queues children of few distinct capabilities, and
-- otherwise takes the pair apart and joins a key per child.
local function queue_of(capprio)
  local q = QUEUES[capprio]
  if not q then
    local cap, prio = smatch(capprio, '^([^\30]*)\30(.*)$')
    q = { cap, stream_key(cap, prio) }
    QUEUES[capprio] = q
  end
  return q[1], q[2]
end
local function leases_key(ep) return P .. 'ep:' .. ep .. ':leases' end
-- An endpoint's hold, limit and budget keys (EP_KEYS), built once per endpoint and namespace:
-- every LLM call's lease reads all three.
local function ep_keys(ep)
  local k = EP_KEYS[ep]
  if not k then
    local base = P .. 'ep:' .. ep
    k = { hold = base .. ':hold', limit = base .. ':limit', budget = base .. ':budget' }
    EP_KEYS[ep] = k
  end
  return k
end
local function hold_key(ep) return ep_keys(ep).hold end
local function limit_key(ep) return ep_keys(ep).limit end
local function budget_key(ep) return ep_keys(ep).budget end

-- Task fields. A workflow keeps its tasks' fields in its own hash, task i's field f as
-- "<i>.<f>" ("3.result"), and says how with its field `layout`:
--   "packed"  (this version's submitters) the definition a task's start reads is one field
--             "<i>.d" (the references with their names, name, max attempts, on_failure,
--             below, the spec: DPART), the children with their capability and priority one
--             field "<i>.k", the state one field "<i>.s" (PART); the rest ("<i>.cap",
--             "<i>.prio", "<i>.result", "<i>.error", ...) fields of their own. A start then
--             reads three of the task's fields with the workflow's, a completion two, and a
--             release one per child.
--   "fields"  (the version before) the same without "<i>.d" and "<i>.k": every definition
--             field of its own ("<i>.name", "<i>.spec", "<i>.children", ...).
--   absent    (earlier versions) one hash per task ({ns}:wf:<wf>:t:<i>, plain field names).
-- A task is no key of its own to create, look up, give a TTL and delete, and the scripts
-- read a task and its workflow (or a task and its children) with one command. Workflows of
-- the earlier layouts may still be in flight during a rolling upgrade, so every script
-- serves all three: the t_* helpers below find a task's fields in any of them, and the hot
-- paths (begin_entry, complete.lua, release) ask for the packed fields with the `layout`
-- and read again in the layout it names when it is another.
local FIELDS_LAYOUT, PACKED_LAYOUT = 'fields', 'packed'

-- The field names of task `i` (a decimal string): names(i).status is "<i>.status". Each
-- name is made on first use and kept with the library (a concatenation hashes and interns
-- a new string each time, and the hot path names about fifty fields per task), so a script
-- asks once per task and then reads plain table fields. Only indexes of up to three digits
-- are kept: the cache stays bounded whatever the workflows' sizes.
-- (The parts of the state and of a packed definition have no field of their own: PART and
-- DPART map them into "<i>.s" and "<i>.d".)
local TASK_FIELD_NAMES = { 'name', 'cap', 'prio', 'spec', 'children', 'refs', 'max_attempts',
  'on_failure', 'below', 'result', 'error', 'retry_ms', 'deferrals', 'waiting_since', 'reason',
  'requeued', 's', 'd', 'k' }
local NAMES = {}
local function names(i)
  local n = NAMES[i]
  if n then return n end
  n = {}
  for _, f in ipairs(TASK_FIELD_NAMES) do n[f] = i .. '.' .. f end
  if #i <= 3 then NAMES[i] = n end
  return n
end

-- A task's state in the fields and packed layouts is one field, "<i>.s": the parts below
-- joined by \31 (unit separator), an empty part for a value not set. The hot path reads and
-- writes a task's state as one value: one field to look up, one string to hand to Lua and
-- back, instead of nine (docs/benchmarks.md, "The eleventh round").
local PART = { status = 1, pending = 2, attempts = 3, entry = 4, consumer = 5, delivery = 6,
  ready_ms = 7, started_ms = 8, finished_ms = 9 }
local SPAT = '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)' ..
  '\31([^\31]*)\31([^\31]*)\31([^\31]*)$'
-- The separator of the state's parts. The hot path (begin_entry, complete.lua,
-- release_in_hash) takes a state apart with one of the views below and joins one with a
-- single concatenation in place: per field, a Lua function call costs about what the field
-- costs Redis (docs/benchmarks.md, "The eleventh round").
local S = '\31'
-- A state field's value from its parts (status, pending, attempts, entry, consumer,
-- delivery, ready_ms, started_ms, finished_ms).
local function state(status, pending, attempts, entry, consumer, delivery, ready, started,
    finished)
  return status .. '\31' .. pending .. '\31' .. attempts .. '\31' .. entry .. '\31' ..
    consumer .. '\31' .. delivery .. '\31' .. ready .. '\31' .. started .. '\31' .. finished
end
-- Views of a state for the hot path, each capturing only what its caller reads or changes
-- (a capture is a new Lua string, and taking a state apart into nine cost a tenth of a
-- task's instructions with the rest of the pattern matching; docs/benchmarks.md, "The
-- twelfth round"). A new state is joined from the captured runs, which keep their
-- separators:
-- begin_entry: status, "\31pending\31attempts\31entry\31", attempts, entry,
-- "\31ready_ms\31", ready_ms, "\31finished_ms" (consumer, delivery, started_ms replaced).
local BPAT = '^([^\31]*)(\31[^\31]*\31([^\31]*)\31([^\31]*)\31)[^\31]*\31[^\31]*' ..
  '(\31([^\31]*)\31)[^\31]*(\31[^\31]*)$'
-- complete.lua: status, everything from pending to started_ms with its separators, entry,
-- consumer, delivery (the fence; status and finished_ms replaced).
local CPAT = '^([^\31]*)(\31[^\31]*\31[^\31]*\31([^\31]*)\31([^\31]*)\31([^\31]*)' ..
  '\31[^\31]*\31[^\31]*\31)[^\31]*$'
-- A released child: status, pending, the rest from attempts on with its separators; and,
-- for one that becomes ready, that rest as "\31attempts\31", "\31consumer\31delivery\31",
-- "\31started_ms\31finished_ms" (entry and ready_ms replaced).
local LPAT = '^([^\31]*)\31([^\31]*)(\31.*)$'
local LRPAT = '^(\31[^\31]*\31)[^\31]*(\31[^\31]*\31[^\31]*\31)[^\31]*(\31.*)$'
-- The attempts in CPAT's run ("\31pending\31attempts..."), and in LRPAT's first one
-- ("\31attempts\31"), for an event.
local APAT = '^\31[^\31]*\31([^\31]*)'
local LAPAT = '^\31([^\31]*)'

-- The state's parts as a table (t[1..9]), or nil.
local function state_parts(v)
  if not v then return nil end
  return { smatch(v, SPAT) }
end

-- A packed definition ("<i>.d", written once by the submitter, keys.rs's pack_definition):
-- these parts joined by \31, the references first (a start reads only them) and the spec
-- last (it is JSON text, which holds no control character, and is taken whole). `refs` is
-- each referenced task as "<j>\30<name>", joined by \29. A start hands the whole definition
-- to the worker, which takes it apart (keys.rs's parse_definition).
local DPART = { refs = 1, name = 2, max_attempts = 3, on_failure = 4, below = 5, spec = 6 }
local DPAT = '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31(.*)$'
-- The references and the name in a packed definition.
local DREFS = '^([^\31]*)'
local DNAME = '^[^\31]*\31([^\31]*)'
-- The index of each reference of a packed definition's `refs`.
local RPAT = '(%d+)\30[^\29]*'
-- Packed children ("<i>.k", absent for a task without children): each child as
-- "<c>\30<capability>\30<priority>", joined by \29, so a release queues a child without
-- reading its capability and priority. KPAT: the index and "<capability>\30<priority>"
-- (queue_of).
local KPAT = '(%d+)\30([^\29]*)'

-- The indexes of a packed list (refs or children) as the other layouts store them: "i,j".
local function index_list(v, pat)
  local out = {}
  for j in sgmatch(v, pat) do out[#out + 1] = j end
  return table.concat(out, ',')
end

-- Records what the caller read of the workflow's `layout` field (saves a command later) and
-- returns whether the tasks live in the workflow hash and whether their definitions are
-- packed.
local function note_layout(wf, v)
  LAYOUT_WF, IN_HASH, PACKED = wf, v == PACKED_LAYOUT or v == FIELDS_LAYOUT, v == PACKED_LAYOUT
  return IN_HASH, PACKED
end

-- Whether workflow `wf` keeps its tasks in its own hash. A workflow that does not exist
-- reads as the earliest layout: its task hashes do not exist either, so every read finds
-- nothing, as it should.
local function in_wf(wf)
  if wf ~= LAYOUT_WF then
    note_layout(wf, rcall('HGET', wf_key(wf), 'layout'))
  end
  return IN_HASH
end

-- The fields of task `i` in any layout, for the paths that are not hot (failure, cancel,
-- promote, reclaim, requeue, the workflow's end). In the fields and packed layouts a field
-- of the state is a part of "<i>.s" (empty when not set, read as absent); in the packed
-- layout a field of the definition is a part of "<i>.d" and `children` comes from "<i>.k"
-- (both lists as "i,j", as the other layouts store them); any other field is "<i>.<f>".
local function t_mget(wf, i, ...)
  local fs = { ... }
  if not in_wf(wf) then return rcall('HMGET', task_key(wf, i), unpack(fs)) end
  local packed = PACKED
  local N, get, at_s, at_d, at_k = names(i), {}, nil, nil, nil
  for k = 1, #fs do
    local f = fs[k]
    if PART[f] then at_s = true
    elseif packed and DPART[f] then at_d = true
    elseif packed and f == 'children' then at_k = true
    else get[#get + 1] = N[f] end
  end
  if at_s then get[#get + 1] = N.s; at_s = #get end
  if at_d then get[#get + 1] = N.d; at_d = #get end
  if at_k then get[#get + 1] = N.k; at_k = #get end
  local r = rcall('HMGET', wf_key(wf), unpack(get))
  local parts = at_s and state_parts(r[at_s])
  local def = at_d and r[at_d] and { smatch(r[at_d], DPAT) }
  local out, plain = {}, 0
  for k = 1, #fs do
    local f = fs[k]
    local p = PART[f]
    if p then
      local v = parts and parts[p]
      out[k] = (v and v ~= '') and v or false
    elseif packed and DPART[f] then
      local v = def and def[DPART[f]] or false
      if v and f == 'refs' then v = index_list(v, RPAT) end
      out[k] = v
    elseif packed and f == 'children' then
      -- No "<i>.k": no children (if the task exists at all).
      local v = r[at_k]
      out[k] = v and index_list(v, KPAT) or ''
    else
      plain = plain + 1
      out[k] = r[plain]
    end
  end
  return out
end
local function t_get(wf, i, f) return t_mget(wf, i, f)[1] end

-- Task `i`'s state field with the parts `parts` (part position -> value, '' for none) set:
-- {field, value} for an HSET of the workflow hash.
local function changed_state(wf, i, parts)
  local N = names(i)
  local st = state_parts(rcall('HGET', wf_key(wf), N.s)) or { '', '', '', '', '', '', '', '', '' }
  for p, v in pairs(parts) do st[p] = v end
  return N.s, state(unpack(st))
end

-- A packed definition is written once, at submission: no script changes it.
local function not_definition(f)
  if PACKED and (DPART[f] or f == 'children') then
    error('task field ' .. f .. ' is part of the packed definition')
  end
end

-- Sets fields of task `i` (field/value pairs).
local function t_set(wf, i, ...)
  local a = { ... }
  if not in_wf(wf) then return rcall('HSET', task_key(wf, i), unpack(a)) end
  local N, set, parts = names(i), {}, nil
  for k = 1, #a, 2 do
    local p = PART[a[k]]
    if p then
      parts = parts or {}
      parts[p] = a[k + 1]
    else
      not_definition(a[k])
      set[#set + 1] = N[a[k]]; set[#set + 1] = a[k + 1]
    end
  end
  if parts then
    local f, v = changed_state(wf, i, parts)
    set[#set + 1] = f; set[#set + 1] = v
  end
  return rcall('HSET', wf_key(wf), unpack(set))
end

-- Deletes fields of task `i` (a part of the state is emptied).
local function t_del(wf, i, ...)
  local a = { ... }
  if not in_wf(wf) then return rcall('HDEL', task_key(wf, i), unpack(a)) end
  local N, del, parts = names(i), {}, nil
  for k = 1, #a do
    local p = PART[a[k]]
    if p then
      parts = parts or {}
      parts[p] = ''
    else
      not_definition(a[k])
      del[#del + 1] = N[a[k]]
    end
  end
  if parts then
    local f, v = changed_state(wf, i, parts)
    rcall('HSET', wf_key(wf), f, v)
  end
  if #del > 0 then rcall('HDEL', wf_key(wf), unpack(del)) end
end
-- Adds `by` to a field of task `i` that is not part of its state (deferrals, requeued; the
-- state's counts change with the state, through t_set). Only the earliest layout's release
-- counts `pending` down with it.
local function t_incr(wf, i, f, by)
  if not in_wf(wf) then return rcall('HINCRBY', task_key(wf, i), f, by) end
  if PART[f] then error('t_incr: ' .. f .. ' is a part of the state') end
  not_definition(f)
  return rcall('HINCRBY', wf_key(wf), names(i)[f], by)
end

-- A command with arguments a[1..] that may be many (a task's children, a whole workflow):
-- Lua's unpack gives at most about 8000 values, so more are sent in several commands of
-- CHUNK arguments each (even, for field/value pairs). HMGET's replies are joined.
local CHUNK = 4000
local function call_many(cmd, key, a)
  if #a <= CHUNK then
    return rcall(cmd, key, unpack(a))
  end
  local out = {}
  for from = 1, #a, CHUNK do
    local r = rcall(cmd, key, unpack(a, from, math.min(#a, from + CHUNK - 1)))
    -- (Redis's nil reaches Lua as false: #r counts every field.)
    if type(r) == 'table' then
      for k = 1, #r do out[#out + 1] = r[k] end
    end
  end
  return out
end

-- Return codes: the status a script reports (its whole reply, or the first element of an
-- array reply). One table for every script, so a number means the same wherever it appears;
-- each script's header lists the codes it can return. gleitzeit-queue mirrors this table as
-- `ScriptCode` (crates/gleitzeit-queue/src/codes.rs), whose test reads it from this file.
local CODE = {
  -- Done as asked: submit wrote the workflow, begin started the task, complete recorded the
  -- result, cancel cancelled the workflow, requeue put the task back to work.
  OK = 1,
  -- Fenced out: the entry is pending for another consumer or delivery (it was reclaimed),
  -- or no longer pending while the task has not finished. Nothing changed.
  STALE = 2,
  -- The task had already finished. Nothing changed (a leftover pending entry of this
  -- delivery is acknowledged).
  DUPLICATE = 3,
  -- Cancelled by a user: the task was cancelled while it ran (its result or error is kept
  -- for inspection, the entry acknowledged), or the dead letter's workflow was cancelled
  -- (nothing changed).
  CANCELLED = 4,
  -- The entry is this delivery's but the task is not running (nor ready, for a failure):
  -- it was never begun. Nothing changed.
  NOT_RUNNING = 5,
  -- What the call names does not exist: the task or its workflow (expired; a pending entry
  -- is acknowledged), the workflow to cancel, the dead letter to requeue.
  NOT_FOUND = 6,
  -- The failed task waits in {ns}:delayed for its next attempt (or, deferred, for capacity).
  RETRY_SCHEDULED = 7,
  -- The task failed for good; the failure policy was applied if the workflow was running.
  FAILED = 8,
  -- The delivered task cannot run (its status follows); the entry was acknowledged and
  -- deleted.
  NOT_RUNNABLE = 9,
  -- Same idempotency key and digest as an existing workflow (its id follows); nothing
  -- written.
  EXISTING = 10,
  -- Same idempotency key, another digest (the existing workflow's id follows); nothing
  -- written.
  CONFLICT = 11,
  -- A workflow with the requested id already exists; nothing written.
  ID_EXISTS = 12,
  -- The workflow to cancel had already ended (completed, failed or cancelled); unchanged.
  ALREADY_FINISHED = 13,
  -- The dead letter's workflow no longer exists (its retention ended); nothing changed.
  EXPIRED = 14,
  -- The dead letter's task is not failed any more (already requeued); nothing changed.
  NOT_FAILED = 15,
}

-- Task statuses after which a task never runs again.
local TERMINAL = { completed = true, failed = true, skipped = true, cancelled = true }
-- Task statuses that have not started: the failure policy may close these.
local NOT_STARTED = { waiting = true, ready = true, retrying = true }

-- Whether someone follows the workflow's every transition: its watch key exists (set at
-- submission with `--events` or `--wait`, or by a watcher, `Queue::watch`).
local function watched(wf)
  if not WATCHED then WATCHED = {} end
  local w = WATCHED[wf]
  if w == nil then
    w = rcall('EXISTS', watch_key(wf)) == 1
    WATCHED[wf] = w
  end
  return w
end

-- Records what the caller read of a packed workflow's `watch` field: whoever creates the
-- watch key sets it first (submit.lua, watch.lua), so a packed workflow without it is not
-- watched and the call asks for no key (an EXISTS per call otherwise, about two per task).
-- The key still decides when the field is there: a watcher's lease expires on Redis's clock.
local function note_watch(wf, v)
  if not v then
    if not WATCHED then WATCHED = {} end
    WATCHED[wf] = false
  end
end

-- Appends one progress event to the workflow's events stream (trimmed approximately to
-- `maxlen`: events are for watching progress, the hashes hold the truth). `deferred` marks a
-- `retrying` that used no attempt (fail.lua's deferral: nothing could take the task).
-- Workflow events are always written; a task's transitions (ready, running, retrying,
-- waiting and its end) only while the workflow is watched: they are stream appends per task
-- that nobody reads otherwise (the tasks' fields hold the same), and a watcher asks for them
-- before it reads the current state, from which it learns what happened before
-- (gleitzeit-submit's follow.rs), so every transition after that read is an event.
local function emit(wf, maxlen, now, kind, task, idx, status, attempt, deferred)
  if kind == 'task' and not watched(wf) then return end
  local args = { 'XADD', events_key(wf), 'MAXLEN', '~', maxlen, '*',
                 'kind', kind, 'status', status, 'ms', now }
  if task then
    args[#args + 1] = 'task'; args[#args + 1] = task
    args[#args + 1] = 'i'; args[#args + 1] = idx
  end
  if attempt then
    args[#args + 1] = 'attempt'; args[#args + 1] = attempt
  end
  if deferred then
    args[#args + 1] = 'deferred'; args[#args + 1] = 1
  end
  rcall(unpack(args))
end

-- Fencing: is `entry` pending in `group` for exactly this consumer and this delivery?
-- 'ours'  - yes;
-- 'other' - pending, but for another consumer or another delivery (it was reclaimed);
-- 'gone'  - not pending at all (acknowledged, deleted, or the group does not exist).
local function owner(stream, group, entry, consumer, deliveries)
  local p = rpcall('XPENDING', stream, group, entry, entry, 1)
  if type(p) ~= 'table' or p.err or #p == 0 then return 'gone' end
  if p[1][2] == consumer and tonum(p[1][4]) == tonum(deliveries) then return 'ours' end
  return 'other'
end

-- Finishes an entry: it leaves the consumer's pending list. It stays in the stream, behind
-- the group's last delivered entry, until trim.lua removes the finished head of the stream
-- in bulk: an XDEL per task was the dearest command of a task (nearly every one deletes the
-- stream's first entry, and Redis then skips the deleted entries at the head of the node
-- to find the new first one). So the ready entries of a stream are the ones after its
-- group's last delivered id (the group's `lag`), not its length.
local function ack_entry(stream, group, entry)
  rcall('XACK', stream, group, entry)
end

-- Stream ids "<ms>-<seq>" compared as numbers (both parts stay below 2^53).
local function id_parts(id)
  local ms, seq = smatch(id, '^(%d+)%-(%d+)$')
  return tonum(ms) or 0, tonum(seq) or 0
end
local function id_less(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end

-- What the consumer groups of a stream still need from it: `floor`, the first id that any
-- group may still read or that is pending (every entry before it is finished: delivered to
-- every group and acknowledged), nil when the stream or its groups do not exist; and
-- `busy`, whether any entry is pending or not yet delivered to some group (an entry in a
-- stream without any group counts as not delivered); `busy` is only worked out when asked.
local function stream_needs(key, want_busy)
  local groups = rpcall('XINFO', 'GROUPS', key)
  if type(groups) ~= 'table' or groups.err then return nil, false end
  if #groups == 0 then return nil, rcall('XLEN', key) > 0 end
  local floor, busy = nil, false
  for _, g in ipairs(groups) do
    local name, pending, last
    for j = 1, #g, 2 do
      local f = g[j]
      if f == 'name' then name = g[j + 1]
      elseif f == 'pending' then pending = g[j + 1]
      elseif f == 'last-delivered-id' then last = g[j + 1] end
    end
    -- The entry after the last delivered one: "<ms>-<seq + 1>".
    local lm, ls = id_parts(last)
    local keep = string.format('%d-%d', lm, ls + 1)
    if pending > 0 then
      busy = true
      local p = rcall('XPENDING', key, name)
      if p[2] and id_less(p[2], keep) then keep = p[2] end
    end
    if want_busy and not busy
        and #rcall('XRANGE', key, '(' .. last, '+', 'COUNT', '1') > 0 then
      busy = true
    end
    if not floor or id_less(keep, floor) then floor = keep end
  end
  return floor, busy
end

-- waiting/retrying -> ready: queue a reference (never the payload) on the task's stream.
-- The capability is (re)registered: `prune` may have removed an idle one while this task
-- still waited for its parents, and readers only read the capabilities in {ns}:caps.
-- `t` = the task's fields {status, cap, prio, name, attempts} when the caller read them
-- already (release does, to check the status), else nil.
local function make_ready(wf, i, now, maxlen, t)
  t = t or t_mget(wf, i, 'status', 'cap', 'prio', 'name', 'attempts')
  rcall('SADD', CAPS, t[2])
  local id = rcall('XADD', stream_key(t[2], t[3]), '*', 'wf', wf, 't', i)
  t_set(wf, i, 'status', 'ready', 'ready_ms', now, 'entry', id)
  emit(wf, maxlen, now, 'task', t[4], i, 'ready', dec((tonum(t[5]) or 0) + 1))
end

-- A completed task releases its children: each child's `pending` drops by one and the
-- child that reaches 0 while `waiting` becomes ready. A parent completes at most once
-- (fenced), so a child reaches 0 exactly once and is queued exactly once. The status is
-- read with the fields make_ready needs: one command per released child instead of two.
local function release(wf, children, now, maxlen)
  for c in sgmatch(children or '', '[^,]+') do
    local left = t_incr(wf, c, 'pending', '-1')
    if left == 0 then
      local t = t_mget(wf, c, 'status', 'cap', 'prio', 'name', 'attempts')
      if t[1] == 'waiting' then
        make_ready(wf, c, now, maxlen, t)
      end
    end
  end
end

-- Counts children down in a workflow whose tasks are fields of its hash, with one command to
-- read them: per child x, `kids` holds at 4x-3 .. 4x its index, (packed layout)
-- "<capability>\30<priority>" or false (fields layout), by how much its `pending` drops
-- (its parents completing in this call) and the `now` it became ready at if that reaches 0;
-- `get` the fields read for it at get[per * (x - 1) + 1 ..] (its state, then, in the fields
-- layout, cap, prio and name). Each child's new state is appended to `h`, the field/value
-- pairs the caller writes to the workflow hash with its own, so releasing costs no HINCRBY
-- and no HSET per child. A parent completes at most once (fenced), so a child reaches 0
-- exactly once and is queued exactly once, with a `ready` event when the workflow is watched.
local function count_down(wf, wk, kids, get, per, maxlen, h)
  local v = call_many('HMGET', wk, get)
  local caps, m = nil, #h
  for x = 1, #kids / 4 do
    local b, q = per * (x - 1), 4 * (x - 1)
    local st = v[b + 1]
    if st then
      local status, pending, rest = smatch(st, LPAT)
      local left = (num(pending) or 0) - kids[q + 3]
      h[m + 1] = get[b + 1]
      if left == 0 and status == 'waiting' then
        local c, capprio, now = kids[q + 1], kids[q + 2], kids[q + 4]
        local cap, stream
        if capprio then
          cap, stream = queue_of(capprio)
        else
          cap, stream = v[b + 2], stream_key(v[b + 2], v[b + 3])
        end
        if not caps then caps = {} end
        if not caps[cap] then caps[cap] = true; rcall('SADD', CAPS, cap) end
        local id = rcall('XADD', stream, '*', 'wf', wf, 't', c)
        local attempts, runs, ended = smatch(rest, LRPAT)
        h[m + 2] = 'ready' .. S .. '0' .. attempts .. id .. runs .. now .. ended
        if watched(wf) then
          local name
          if capprio then name = t_get(wf, c, 'name') else name = v[b + 4] end
          emit(wf, maxlen, now, 'task', name, c, 'ready',
            dec((num(smatch(attempts, LAPAT)) or 0) + 1))
        end
      else
        h[m + 2] = status .. S .. dec(left) .. rest
      end
      m = m + 2
    end
  end
end

-- release for a workflow whose tasks are fields of its hash (count_down, each child by
-- one): same outcome as release. In the packed layout `children` is the parent's "<i>.k",
-- which names each child's capability and priority, so only the children's states are read
-- (and a child's name only for a watcher's event); in the fields layout it is "i,j" and
-- each child's state, cap, prio and name are read.
local function release_in_hash(wf, wk, children, packed, now, maxlen, h)
  if not children or children == '' then return end
  local kids, get = {}, {}
  if packed then
    for c, capprio in sgmatch(children, KPAT) do
      local b = #kids
      kids[b + 1] = c; kids[b + 2] = capprio; kids[b + 3] = 1; kids[b + 4] = now
      get[#get + 1] = names(c).s
    end
  else
    for c in sgmatch(children, '[^,]+') do
      local C, n, b = names(c), #get, #kids
      kids[b + 1] = c; kids[b + 2] = false; kids[b + 3] = 1; kids[b + 4] = now
      get[n + 1] = C.s; get[n + 2] = C.cap; get[n + 3] = C.prio; get[n + 4] = C.name
    end
  end
  count_down(wf, wk, kids, get, packed and 1 or 4, maxlen, h)
end

-- Moves a task that has not finished to a terminal status (cancelled or skipped) and
-- removes what would still start it: its delayed retry or its ready entry. An entry
-- already delivered stays in its consumer's pending list; begin/complete/fail ack it
-- then, and XAUTOCLAIM drops it for a dead consumer. `reason` (the task's `reason` field)
-- tells a reader of the results why the task never ran. Counters are the caller's job.
local function close_task(wf, i, status, new_status, now, maxlen, reason)
  local t = t_mget(wf, i, 'cap', 'prio', 'entry', 'name', 'attempts')
  if status == 'retrying' then
    rcall('ZREM', DELAYED, wf .. '|' .. i)
  elseif status == 'ready' and t[3] then
    rcall('XDEL', stream_key(t[1], t[2]), t[3])
  end
  t_set(wf, i, 'status', new_status, 'finished_ms', now, 'reason', reason)
  emit(wf, maxlen, now, 'task', t[4], i, new_status, nil)
end

-- Ends a workflow: final status, event, the fleet-wide counter workflows_<status> in
-- {ns}:stats (exported as a metric), and the retention TTL on every key it owns. The
-- workflow is entered in {ns}:expiring at its expiry time, so the index {ns}:workflows is
-- trimmed when its keys are gone (promote.lua).
local function finish(wf, status, now, maxlen)
  local wk = wf_key(wf)
  rcall('HSET', wk, 'status', status, 'finished_ms', now)
  rcall('HINCRBY', STATS, 'workflows_' .. status, '1')
  emit(wf, maxlen, now, 'workflow', nil, nil, status, nil)
  local m = rcall('HMGET', wk, 'retention', 'total', 'idem', 'created_ms')
  ENDED = { status, math.max(0, tonum(now) - (tonum(m[4]) or tonum(now))) }
  local ttl = tonum(m[1])
  if ttl and ttl > 0 then
    -- The retention as stored (text), not the number: see dec().
    local keep = m[1]
    rcall('EXPIRE', wk, keep)
    if not in_wf(wf) then
      for i = 0, (tonum(m[2]) or 0) - 1 do
        rcall('EXPIRE', task_key(wf, dec(i)), keep)
      end
    end
    rcall('EXPIRE', events_key(wf), keep)
    -- The watch key only when it may exist (a call that emitted a task event knows).
    if not WATCHED or WATCHED[wf] ~= false then
      rcall('EXPIRE', watch_key(wf), keep)
    end
    if m[3] and m[3] ~= '' then
      rcall('EXPIRE', idem_key(m[3]), keep)
    end
    rcall('ZADD', EXPIRING, tonum(now) + ttl * 1000, wf)
  end
end

-- A script's reply `code`, or {code, final status, duration ms} when this call ended the
-- workflow (complete.lua and fail.lua).
local function with_end(code)
  if ENDED then return { code, ENDED[1], ENDED[2] } end
  return code
end

-- Policy fail_fast after a terminal failure of the task named `failed`: every task that has
-- not started is cancelled and the workflow fails now. Running tasks finish on their own.
local function fail_fast(wf, failed, now, maxlen)
  local wk = wf_key(wf)
  local total = tonum(rcall('HGET', wk, 'total')) or 0
  local n = 0
  local reason = 'task "' .. failed .. '" failed and the policy fail_fast cancels the rest'
  for k = 0, total - 1 do
    local i = dec(k)
    local s = t_get(wf, i, 'status')
    if s and NOT_STARTED[s] then
      close_task(wf, i, s, 'cancelled', now, maxlen, reason)
      n = n + 1
    end
  end
  if n > 0 then
    rcall('HINCRBY', wk, 'cancelled', n)
    rcall('HINCRBY', wk, 'open', -n)
  end
  finish(wf, 'failed', now, maxlen)
end

-- Policy continue after a terminal failure of task `i`: every descendant that has not
-- finished is skipped (breadth-first over `children`); independent branches go on. The
-- workflow ends, as failed, when its last open task ends.
local function skip_descendants(wf, i, now, maxlen)
  local wk = wf_key(wf)
  local seen = {}
  local queue = {}
  local f = t_mget(wf, i, 'children', 'name')
  local reason = 'upstream task "' .. (f[2] or i) .. '" failed (policy continue)'
  for c in sgmatch(f[1] or '', '[^,]+') do
    queue[#queue + 1] = c
  end
  local head, n = 1, 0
  while head <= #queue do
    local c = queue[head]
    head = head + 1
    if not seen[c] then
      seen[c] = true
      local t = t_mget(wf, c, 'status', 'children')
      if t[1] and NOT_STARTED[t[1]] then
        close_task(wf, c, t[1], 'skipped', now, maxlen, reason)
        n = n + 1
      end
      for g in sgmatch(t[2] or '', '[^,]+') do
        queue[#queue + 1] = g
      end
    end
  end
  local open = tonum(rcall('HGET', wk, 'open')) or 0
  if n > 0 then
    rcall('HINCRBY', wk, 'skipped', n)
    open = rcall('HINCRBY', wk, 'open', -n)
  end
  if open <= 0 then
    finish(wf, 'failed', now, maxlen)
  end
end

-- The workflow's last open task just ended normally (no policy applied): its final status
-- tells the truth — failed if any task failed.
local function finish_if_done(wf, open, now, maxlen)
  if open <= 0 then
    local failed = tonum(rcall('HGET', wf_key(wf), 'failed')) or 0
    finish(wf, failed > 0 and 'failed' or 'completed', now, maxlen)
  end
end

-- The definition fields a start of a task in an earlier layout reads (OLD_DEF), and the
-- definition they make as a packed one (DPART; the failure policy left out, the worker does
-- not read it) with the results of the tasks it references, in order: one more HMGET for
-- the references in the fields layout, one per reference's task hash in the earliest. Only
-- while such workflows are in flight after an upgrade.
local OLD_DEF = { 'name', 'max_attempts', 'below', 'refs', 'spec' }
local function old_definition(wf, in_hash, t)
  local rs, refs, results = {}, {}, {}
  for r in sgmatch(t[4] or '', '[^,]+') do rs[#rs + 1] = r end
  local rr = {}
  if in_hash and #rs > 0 then
    local get = {}
    for k, r in ipairs(rs) do
      local R = names(r)
      get[2 * k - 1] = R.name; get[2 * k] = R.result
    end
    rr = call_many('HMGET', wf_key(wf), get)
  elseif #rs > 0 then
    for k, r in ipairs(rs) do
      local one = rcall('HMGET', task_key(wf, r), 'name', 'result')
      rr[2 * k - 1] = one[1]; rr[2 * k] = one[2]
    end
  end
  for k, r in ipairs(rs) do
    refs[k] = r .. '\30' .. (rr[2 * k - 1] or '')
    results[k] = rr[2 * k]
  end
  local d = table.concat(refs, '\29') .. S .. (t[1] or '') .. S .. (t[2] or '1') .. S .. S ..
    (t[3] or '0') .. S .. (t[5] or '')
  return d, results
end

-- Starts a delivered entry (begin.lua after its fence, and read.lua for each entry it has
-- just delivered, which no other consumer can own yet). A runnable task (ready or running,
-- the entry is the task's current entry, the workflow is running) becomes running and its
-- spec, attempts, the workflow input and the results of the tasks it references are
-- returned; an entry whose task can no longer run is acknowledged; a task that
-- had started under a workflow that has since failed is cancelled (counted) rather than
-- re-run. The task records who runs it (`consumer`, `delivery`: this delivery's count),
-- which complete.lua fences on. Returns begin.lua's reply (see its header).
local function begin_entry(stream, group, entry, consumer, now, maxlen, wf, i, delivery)
  local wk, N = wf_key(wf), names(i)
  -- The workflow's fields and, in the packed layout, the task's: one command. A workflow of
  -- an earlier layout has the task's definition elsewhere: read then, by the layout found.
  local w = rcall('HMGET', wk, 'status', 'input', 'layout', N.s, N.d, N.deferrals, 'watch')
  local in_hash, packed = note_layout(wf, w[3])
  -- The state's runs around what a start changes (BPAT), the definition (packed, or made
  -- up as one from an earlier layout's fields), its references' part.
  local status, pre, tattempts, tentry, mid, ready, post
  local d, refs, deferrals, old
  if in_hash then
    if w[4] then
      status, pre, tattempts, tentry, mid, ready, post = smatch(w[4], BPAT)
    end
    deferrals = w[6]
    if packed then
      note_watch(wf, w[7])
      d = w[5]
      refs = d and smatch(d, DREFS)
    end
  else
    -- The earliest layout: the task's hash holds its state and its definition (OLD_DEF).
    local t = rcall('HMGET', task_key(wf, i), 'status', 'entry', 'attempts', 'ready_ms',
      'deferrals', unpack(OLD_DEF))
    status, tentry, tattempts, ready, deferrals = t[1], t[2], t[3], t[4], t[5]
    old = { t[6], t[7], t[8], t[9], t[10] }
  end
  if not status or (packed and not d) then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, 'missing' }
  end
  if status ~= 'ready' and status ~= 'running' then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, status }
  end
  if tentry ~= entry then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, 'superseded' }
  end

  if not w[1] then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, 'missing' }
  end
  if w[1] ~= 'running' then
    -- The workflow ended (failed under fail_fast) while this task was queued or running:
    -- it does not run again; it is closed as cancelled so the counters stay exact.
    ack_entry(stream, group, entry)
    t_set(wf, i, 'status', 'cancelled', 'finished_ms', now,
      'reason', 'the workflow had ended before the task was taken up again')
    rcall('HINCRBY', wk, 'cancelled', '1')
    rcall('HINCRBY', wk, 'open', '-1')
    emit(wf, maxlen, now, 'task', d and smatch(d, DNAME) or t_get(wf, i, 'name'), i,
      'cancelled', nil)
    return { CODE.NOT_RUNNABLE, 'cancelled' }
  end
  -- An earlier layout: its definition fields as a packed definition, and each reference's
  -- name and result.
  local results
  if not packed then
    if in_hash then
      local get = {}
      for k, f in ipairs(OLD_DEF) do get[k] = N[f] end
      old = rcall('HMGET', wk, unpack(get))
    end
    d, results = old_definition(wf, in_hash, old)
  end

  local attempts = num(tattempts) or 0
  if in_hash then
    rcall('HSET', wk, N.s, 'running' .. pre .. consumer .. S .. delivery .. mid .. now .. post)
  else
    rcall('HSET', task_key(wf, i), 'status', 'running', 'started_ms', now,
      'consumer', consumer, 'delivery', delivery)
  end
  if watched(wf) then
    emit(wf, maxlen, now, 'task', smatch(d, DNAME), i, 'running', dec(attempts + 1))
  end

  -- The definition whole (the worker takes it apart), then each reference's result, in the
  -- definition's order.
  local out = { CODE.OK, d, attempts, w[2], ready or '', num(deferrals) or 0 }
  if results then
    for k = 1, #results do out[6 + k] = results[k] end
  elseif refs and refs ~= '' then
    local rget = {}
    for r in sgmatch(refs, RPAT) do rget[#rget + 1] = names(r).result end
    local rr = call_many('HMGET', wk, rget)
    for k = 1, #rget do out[6 + k] = rr[k] end
  end
  return out
end

-- Parses the fields of a stream entry into (wf, t); nil for an entry that is not ours.
local function entry_ref(fields)
  if type(fields) ~= 'table' then return nil end
  local wf, t
  for k = 1, #fields, 2 do
    if fields[k] == 'wf' then wf = fields[k + 1] elseif fields[k] == 't' then t = fields[k + 1] end
  end
  if wf and t and smatch(t, '^%d+$') then return wf, t end
  return nil
end

-- The end of the shared helpers; the functions of the scripts follow.
