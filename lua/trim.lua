-- trim.lua — remove the finished entries at the head of every capability stream.
--
-- A task's entry is only acknowledged when the task is done with it (lib.lua's ack_entry); it
-- stays in its stream until this script removes it together with its neighbours, one
-- XTRIM MINID per stream instead of one XDEL per task. For each stream of each capability
-- in {ns}:caps (normal, high, low priority), everything before lib.lua's stream_needs floor
-- goes: entries every consumer group has been given and has acknowledged. An entry that is
-- pending (delivered, not acknowledged) or not yet delivered to some group is never
-- removed, nor is anything after it: pending work is never trimmed away.
--
-- The workers' promoter calls this every few seconds; the optional fleet-wide lock lets one
-- worker of the fleet do it per interval instead of each.
--
-- KEYS[1]  {ns}:caps
-- KEYS[2]  {ns}:trim   (string with a PX expiry: the lock)
-- ARGV[1]  key prefix "{ns}:"   (streams are built with keys.rs patterns)
-- ARGV[2]  lock time (ms): the call trims only when no other trim ran within that time;
--          "" trims unconditionally (and leaves the lock as it is)
--
-- Returns {ran, removed}: ran is 1, or 0 when another call holds the lock (nothing was
-- trimmed); removed is the number of entries removed over all streams.

local lock = ARGV[2]
if lock ~= '' and not rcall('SET', KEYS[2], '1', 'NX', 'PX', lock) then
  return { 0, 0 }
end

local removed = 0
for _, cap in ipairs(rcall('SMEMBERS', KEYS[1])) do
  for _, prio in ipairs({ 'normal', 'high', 'low' }) do
    local key = stream_key(cap, prio)
    local floor = stream_needs(key, false)
    if floor then
      removed = removed + rcall('XTRIM', key, 'MINID', floor)
    end
  end
end
return { 1, removed }
