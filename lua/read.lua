-- read.lua — read new entries for one consumer, in priority order, at most COUNT in total,
-- and (when asked) begin each task as it is delivered.
--
-- XREADGROUP ... > on each stream in the order given (the caller passes high-priority
-- streams first, then normal, then low) with the count that is left, so a later stream is
-- only read when the earlier ones had too little, and the total never exceeds ARGV[4]
-- (Redis applies COUNT per stream, so a single multi-stream XREADGROUP cannot promise
-- that). A missing group is created at id 0 (MKSTREAM), so nothing queued before it is
-- lost. Entries that are not task references are acknowledged (and trimmed later).
-- Scripts cannot block: when nothing was read the newest entry id of each stream is
-- returned, and the caller waits with XREAD BLOCK after those ids, which returns as soon
-- as anything is added (nothing added in between is missed), then calls this again.
-- With ARGV[5] set, each entry is begun in the same call (lib.lua's begin_entry, what
-- begin.lua does after its fence): an entry this call has just delivered is pending for
-- this consumer with delivery count 1 and nobody else can own it yet, so it needs no
-- fence, and the worker saves a script call per task.
-- A caller that waits in the group instead (XREADGROUP BLOCK, which hands each new entry
-- to one waiting consumer rather than waking them all) needs no tails (ARGV[7] "group"),
-- and then begins what its wait was delivered with ARGV[7] "begin": the entries come in
-- ARGV[8..], each fenced like begin.lua (pending for this consumer, delivery count 1: a
-- reclaim may have taken it over since the wait returned) and begun; one fenced out is
-- left out of the reply. Nothing is read in that mode.
--
-- KEYS[k]  the streams, in priority order
-- ARGV[1]  key prefix "{ns}:" (unused here; every script receives it first)
-- ARGV[2]  consumer group
-- ARGV[3]  consumer name
-- ARGV[4]  maximum number of entries in total (> 0)
-- ARGV[5]  now (ms) to begin each entry; "" to only read ("begin" needs it)
-- ARGV[6]  events stream MAXLEN (when beginning)
-- ARGV[7]  "" (read; tails when nothing was read), "group" (read; no tails), or "begin"
--          (begin the delivered entries of ARGV[8..]; nothing is read)
-- ARGV[8..] with "begin": stream position k (1-based), entry id, workflow id, task index,
--          per entry
--
-- Returns {entries, tails}:
--   entries  flat list: stream position k (1-based), entry id, workflow id, task index, ...;
--            when beginning, each entry is followed by begin_entry's reply: an array whose
--            first element is CODE.OK (1) (the task runs; the fields of begin.lua's reply)
--            or CODE.NOT_RUNNABLE (9) (entry acknowledged; the task's status follows)
--   tails    when entries is empty and ARGV[7] is "", one id per stream (its newest entry,
--            or "0-0"); otherwise an empty list

local group, consumer = ARGV[2], ARGV[3]
local left = tonum(ARGV[4]) or 0
local now, maxlen, mode = ARGV[5], ARGV[6], ARGV[7] or ''
local begin = now ~= nil and now ~= ''

if mode == 'begin' then
  if not begin then return redis.error_reply('read: "begin" needs now (ARGV[5])') end
  local out = {}
  for a = 8, #ARGV - 3, 4 do
    local k, id, wf, t = tonum(ARGV[a]), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
    local key = k and KEYS[k]
    if not key then return redis.error_reply('read: stream position ' .. ARGV[a]) end
    if owner(key, group, id, consumer, '1') == 'ours' then
      out[#out + 1] = k; out[#out + 1] = id; out[#out + 1] = wf; out[#out + 1] = t
      out[#out + 1] = begin_entry(key, group, id, consumer, now, maxlen, wf, t, '1')
    end
  end
  return { out, {} }
end

local function xread(key, n)
  local r = rpcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n, 'STREAMS', key, '>')
  if type(r) == 'table' and r.err then
    if not sfind(r.err, 'NOGROUP', 1, true) then return redis.error_reply(r.err) end
    rcall('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
    r = rcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', n, 'STREAMS', key, '>')
  end
  return r
end

local out = {}
for k = 1, #KEYS do
  while left > 0 do
    local r = xread(KEYS[k], left)
    if type(r) == 'table' and r.err then return r end
    if not r or not r[1] then break end
    local entries = r[1][2]
    if #entries == 0 then break end
    local malformed = false
    for _, e in ipairs(entries) do
      local wf, t = entry_ref(e[2])
      if wf then
        out[#out + 1] = k; out[#out + 1] = e[1]; out[#out + 1] = wf; out[#out + 1] = t
        if begin then
          out[#out + 1] = begin_entry(KEYS[k], group, e[1], consumer, now, maxlen, wf, t, '1')
        end
        left = left - 1
      else
        ack_entry(KEYS[k], group, e[1])
        malformed = true
      end
    end
    -- Only a batch that lost entries to malformed ones can leave more to read here.
    if not malformed then break end
  end
  if left <= 0 then break end
end

local tails = {}
if #out == 0 and mode == '' then
  for k = 1, #KEYS do
    local last = rcall('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
    tails[k] = last[1] and last[1][1] or '0-0'
  end
end
return { out, tails }
