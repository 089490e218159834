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
--   {ns}:wf:<wf>               workflow hash
--   {ns}:wf:<wf>:t:<i>         task hash (i = 0-based task index)
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
-- Per call: workflow id -> whether it is watched (see emit), so a script that emits several
-- events of one workflow asks once (made on first use: most calls never ask).
local WATCHED
-- Per call: {final status, duration ms} of the workflow this call ended (finish sets it), so
-- complete.lua and fail.lua can return it and the worker records the workflow's duration
-- without reading the workflow again. A workflow ends in exactly one call.
local ENDED

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
  -- Nearly every call names the namespace of the call before it: its keys are built already
  -- (each `..` hashes and interns a new string, eight per call otherwise).
  if prefix == P then return end
  P = prefix
  EP_KEYS = {}
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

-- Appends one progress event to the workflow's events stream (trimmed approximately to
-- `maxlen`: events are for watching progress, the hashes hold the truth). `deferred` marks a
-- `retrying` that used no attempt (fail.lua's deferral: nothing could take the task).
-- Workflow events are always written; a task's transitions (ready, running, retrying,
-- waiting and its end) only while the workflow is watched: they are stream appends per task
-- that nobody reads otherwise (the task hashes hold the same), and a watcher asks for them
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
local function make_ready(wf, i, tk, now, maxlen, t)
  t = t or rcall('HMGET', tk, 'status', 'cap', 'prio', 'name', 'attempts')
  rcall('SADD', CAPS, t[2])
  local id = rcall('XADD', stream_key(t[2], t[3]), '*', 'wf', wf, 't', i)
  rcall('HSET', tk, 'status', 'ready', 'ready_ms', now, 'entry', id)
  emit(wf, maxlen, now, 'task', t[4], i, 'ready', dec((tonum(t[5]) or 0) + 1))
end

-- A completed task releases its children: each child's `pending` drops by one and the
-- child that reaches 0 while `waiting` becomes ready. A parent completes at most once
-- (fenced), so a child reaches 0 exactly once and is queued exactly once. The status is
-- read with the fields make_ready needs: one command per released child instead of two.
local function release(wf, children, now, maxlen)
  for c in sgmatch(children or '', '[^,]+') do
    local ck = task_key(wf, c)
    local left = rcall('HINCRBY', ck, 'pending', '-1')
    if left == 0 then
      local t = rcall('HMGET', ck, 'status', 'cap', 'prio', 'name', 'attempts')
      if t[1] == 'waiting' then
        make_ready(wf, c, ck, now, maxlen, t)
      end
    end
  end
end

-- Moves a task that has not finished to a terminal status (cancelled or skipped) and
-- removes what would still start it: its delayed retry or its ready entry. An entry
-- already delivered stays in its consumer's pending list; begin/complete/fail ack it
-- then, and XAUTOCLAIM drops it for a dead consumer. `reason` (the task's `reason` field)
-- tells a reader of the results why the task never ran. Counters are the caller's job.
local function close_task(wf, i, tk, status, new_status, now, maxlen, reason)
  local t = rcall('HMGET', tk, 'cap', 'prio', 'entry', 'name', 'attempts')
  if status == 'retrying' then
    rcall('ZREM', DELAYED, wf .. '|' .. i)
  elseif status == 'ready' and t[3] then
    rcall('XDEL', stream_key(t[1], t[2]), t[3])
  end
  rcall('HSET', tk, 'status', new_status, 'finished_ms', now, 'reason', reason)
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
    for i = 0, (tonum(m[2]) or 0) - 1 do
      rcall('EXPIRE', task_key(wf, dec(i)), keep)
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
    local tk = task_key(wf, i)
    local s = rcall('HGET', tk, 'status')
    if s and NOT_STARTED[s] then
      close_task(wf, i, tk, s, 'cancelled', now, maxlen, reason)
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
  local f = rcall('HMGET', task_key(wf, i), 'children', 'name')
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
      local ck = task_key(wf, c)
      local t = rcall('HMGET', ck, 'status', 'children')
      if t[1] and NOT_STARTED[t[1]] then
        close_task(wf, c, ck, t[1], 'skipped', now, maxlen, reason)
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

-- Starts a delivered entry (begin.lua after its fence, and read.lua for each entry it has
-- just delivered, which no other consumer can own yet). A runnable task (ready or running,
-- the entry is the task's current entry, the workflow is running) becomes running and its
-- spec, attempts, the workflow input and the results of the tasks it references are
-- returned; an entry whose task can no longer run is acknowledged; a task that
-- had started under a workflow that has since failed is cancelled (counted) rather than
-- re-run. The task hash records who runs it (`consumer`, `delivery`: this delivery's count),
-- which complete.lua fences on. Returns begin.lua's reply (see its header).
local function begin_entry(stream, group, entry, consumer, now, maxlen, wf, i, delivery)
  local tk, wk = task_key(wf, i), wf_key(wf)
  local t = rcall('HMGET', tk, 'status', 'entry', 'spec', 'attempts', 'max_attempts',
    'refs', 'name', 'ready_ms', 'deferrals', 'below')
  local status = t[1]
  if not status then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, 'missing' }
  end
  if status ~= 'ready' and status ~= 'running' then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, status }
  end
  if t[2] ~= entry then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, 'superseded' }
  end

  local w = rcall('HMGET', wk, 'status', 'input')
  if not w[1] then
    ack_entry(stream, group, entry)
    return { CODE.NOT_RUNNABLE, 'missing' }
  end
  if w[1] ~= 'running' then
    -- The workflow ended (failed under fail_fast) while this task was queued or running:
    -- it does not run again; it is closed as cancelled so the counters stay exact.
    ack_entry(stream, group, entry)
    rcall('HSET', tk, 'status', 'cancelled', 'finished_ms', now,
      'reason', 'the workflow had ended before the task was taken up again')
    rcall('HINCRBY', wk, 'cancelled', '1')
    rcall('HINCRBY', wk, 'open', '-1')
    emit(wf, maxlen, now, 'task', t[7], i, 'cancelled', nil)
    return { CODE.NOT_RUNNABLE, 'cancelled' }
  end

  local attempts = tonum(t[4]) or 0
  rcall('HSET', tk, 'status', 'running', 'started_ms', now, 'consumer', consumer,
    'delivery', delivery)
  emit(wf, maxlen, now, 'task', t[7], i, 'running', dec(attempts + 1))

  local out = { CODE.OK, t[7], t[3], attempts, tonum(t[5]) or 1, w[2], t[8] or '',
    tonum(t[9]) or 0, tonum(t[10]) or 0 }
  for r in sgmatch(t[6] or '', '[^,]+') do
    local rr = rcall('HMGET', task_key(wf, r), 'name', 'result')
    out[#out + 1] = rr[1] or ''
    out[#out + 1] = rr[2]
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
