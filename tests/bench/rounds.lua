-- rounds.lua: what the Lua benchmarks share. This machine is shared and noisy, so the ways being
-- compared run side by side, one after another in each round, and their medians are compared.
--   local rounds = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/rounds.lua")
local lomo = require "lomo"

local M = {}

-- ways = {{name, fn}, ...}: each fn runs once a round, its time divided by `per` (the calls, tokens
-- or steps it makes). Returns each way's median, in seconds.
function M.medians(ways, rounds, per)
  local times = {}
  for w = 1, #ways do times[w] = {} end
  for _ = 1, rounds do
    for w, way in ipairs(ways) do
      local t0 = lomo.clock()
      way[2]()
      times[w][#times[w] + 1] = (lomo.clock() - t0) / (per or 1)
    end
  end
  local med = {}
  for w, t in ipairs(times) do
    table.sort(t)
    med[w] = t[(#t + 1) // 2]
  end
  return med
end

-- One line a way: fmt gets its name, its median in ms and its ratio to the first way's.
function M.report(ways, med, fmt)
  for w, way in ipairs(ways) do print(fmt:format(way[1], 1e3 * med[w], med[w] / med[1])) end
end

return M
