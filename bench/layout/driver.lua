-- driver.lua — appended by run.sh to today.lua or onehash.lua, which define begin(wf, i)
-- and complete(wf, i): begins and completes every task of N diamonds, in the order a
-- worker would (root, the four branches, the join).
--
-- KEYS     none
-- ARGV[1]  N, the number of workflows (as setup.lua wrote them)
-- Returns N.
local N = tonumber(ARGV[1])
for w = 1, N do
  local wf = tostring(w)
  for _, i in ipairs({ '0', '1', '2', '3', '4', '5' }) do
    begin(wf, i)
    complete(wf, i)
  end
end
return N
