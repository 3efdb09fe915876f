-- lomo.profile: where a run's time went, by kind of op, from a context's profile.
--
--   ctx:profile(true)                 -- every op of ctx's models is timed from now on
--   ... opt:step(...) ...
--   io.stderr:write(profile.report(ctx:profile_stats()))
--
-- Each timed op waits for the device before and after, so on a GPU a profiled run is a
-- little slower than an unprofiled one; the shares are what to read.

local M = {}

-- rows(stats) -> array of {op=, calls=, seconds=, share=, tflops=} for the ops that ran,
-- slowest first; share is the fraction of the profiled time, tflops the achieved rate of
-- the ops that count flops (matrix products, attention) and nil for the others.
function M.rows(stats)
  if type(stats) ~= "table" then
    error("lomo.profile: expected the table of ctx:profile_stats(), got " .. type(stats), 2)
  end
  local rows, total = {}, 0
  for op, s in pairs(stats) do
    if type(s) ~= "table" or type(s.calls) ~= "number" or type(s.seconds) ~= "number" then
      error(("lomo.profile: entry '%s' needs numbers calls and seconds"):format(tostring(op)), 2)
    end
    if s.calls > 0 then
      local tflops = (s.flops or 0) > 0 and s.seconds > 0 and s.flops / s.seconds / 1e12 or nil
      rows[#rows + 1] = {op = op, calls = s.calls, seconds = s.seconds, tflops = tflops}
      total = total + s.seconds
    end
  end
  for _, r in ipairs(rows) do r.share = total > 0 and r.seconds / total or 0 end
  table.sort(rows, function(a, b)
    if a.seconds ~= b.seconds then return a.seconds > b.seconds end
    return a.op < b.op
  end)
  return rows, total
end

-- report(stats) -> a text table, one line per op that ran and a total line.
function M.report(stats)
  local rows, total = M.rows(stats)
  local out = {string.format("%-15s %9s %11s %7s %9s", "op", "calls", "seconds", "share", "TFLOP/s")}
  for _, r in ipairs(rows) do
    out[#out + 1] = string.format("%-15s %9d %11.4f %6.1f%% %9s", r.op, math.tointeger(r.calls) or r.calls,
                                  r.seconds, 100 * r.share, r.tflops and string.format("%.3f", r.tflops) or "-")
  end
  out[#out + 1] = string.format("%-15s %9s %11.4f %6.1f%%", "total", "", total, total > 0 and 100 or 0)
  return table.concat(out, "\n") .. "\n"
end

return M
