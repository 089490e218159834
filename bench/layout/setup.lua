-- setup.lua — writes N diamond workflows (root 0 -> 1..4 -> join 5) in both layouts that
-- bench/layout/run.sh compares, as submit.lua would: under {b}: today's (the workflow hash,
-- and one hash per task holding its spec, which makes it a hash table), under {o}: every
-- task's hot state (status, pending count, children, name, capability, priority, attempts)
-- as fields `<field>:<i>` of the workflow hash (a field longer than 64 bytes makes it a hash
-- table) and a hash per task for the spec, references and later the result; under {s}:
-- today's workflow and task hashes without the long values (the task hashes stay listpacks)
-- and one more hash per workflow, `:d`, with every task's spec, name and later result.
--
-- KEYS     none (an experiment on a private server)
-- ARGV[1]  N, the number of workflows
-- Returns N.
local N = tonumber(ARGV[1])
local spec = string.rep('x', 370)
local children = { [0] = '1,2,3,4', '5', '5', '5', '5', '' }
local refs = { [0] = '', '0', '0', '0', '0', '1,2,3,4' }
local pending = { [0] = '0', '1', '1', '1', '1', '4' }
for w = 1, N do
  -- today: workflow hash + one hash per task (hash tables: the spec is long)
  local wk = '{b}:wf:' .. w
  redis.call('HSET', wk, 'id', w, 'name', 'bench diamond', 'status', 'running', 'policy', 'fail_fast',
    'total', '6', 'open', '6', 'completed', '0', 'failed', '0', 'skipped', '0', 'cancelled', '0',
    'created_ms', '1796406466148', 'input', '{}', 'idem', '', 'digest', string.rep('a', 64), 'retention', '86400')
  for i = 0, 5 do
    redis.call('HSET', wk .. ':t:' .. i, 'name', 'Task ' .. i, 'cap', 'llm:bench', 'prio', 'normal', 'spec', spec,
      'status', i == 0 and 'ready' or 'waiting', 'pending', pending[i], 'children', children[i], 'refs', refs[i],
      'max_attempts', '3', 'attempts', '0', 'on_failure', '', 'below', '0')
  end
  -- one hash: the workflow hash holds every task's hot state (a hash table: the digest
  -- field is longer than 64 bytes); the task hash keeps spec, refs and result
  local wk2 = '{o}:wf:' .. w
  local args = { 'HSET', wk2, 'id', w, 'name', 'bench diamond', 'status', 'running', 'policy', 'fail_fast',
    'total', '6', 'open', '6', 'completed', '0', 'failed', '0', 'skipped', '0', 'cancelled', '0',
    'created_ms', '1796406466148', 'input', '{}', 'idem', '', 'digest', string.rep('a', 65), 'retention', '86400' }
  for i = 0, 5 do
    local f = { 's:', i == 0 and 'ready' or 'waiting', 'p:', pending[i], 'ch:', children[i], 'n:', 'Task ' .. i,
      'cap:', 'llm:bench', 'pr:', 'normal', 'a:', '0' }
    for k = 1, #f, 2 do args[#args + 1] = f[k] .. i; args[#args + 1] = f[k + 1] end
  end
  redis.call(unpack(args))
  for i = 0, 5 do
    redis.call('HSET', wk2 .. ':t:' .. i, 'spec', spec, 'refs', refs[i], 'max_attempts', '3',
      'on_failure', '', 'below', '0')
  end
  -- slim: task hashes without the spec (listpacks), the long values in one hash per workflow
  local wk3 = '{s}:wf:' .. w
  redis.call('HSET', wk3, 'id', w, 'name', 'bench diamond', 'status', 'running', 'policy', 'fail_fast',
    'total', '6', 'open', '6', 'completed', '0', 'failed', '0', 'skipped', '0', 'cancelled', '0',
    'created_ms', '1796406466148', 'input', '{}', 'idem', '', 'digest', string.rep('a', 64), 'retention', '86400')
  local data = { 'HSET', wk3 .. ':d' }
  for i = 0, 5 do
    redis.call('HSET', wk3 .. ':t:' .. i, 'name', 'Task ' .. i, 'cap', 'llm:bench', 'prio', 'normal',
      'status', i == 0 and 'ready' or 'waiting', 'pending', pending[i], 'children', children[i], 'refs', refs[i],
      'max_attempts', '3', 'attempts', '0', 'on_failure', '', 'below', '0')
    data[#data + 1] = 's:' .. i; data[#data + 1] = spec
    data[#data + 1] = 'n:' .. i; data[#data + 1] = 'Task ' .. i
  end
  redis.call(unpack(data))
end
return N
